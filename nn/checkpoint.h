// Training checkpoints: everything a run needs to resume bit for bit, in one safetensors file.
//
// Tensors go in as "model.<name>", "optim.<name>" and "hooks.<name>"; the step, every generator's (seed, offset)
// and the caller's extra strings go in the header's __metadata__ as decimal strings (u64 values
// round-trip exactly). The file is an ordinary safetensors file: other tools can open it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "nn/state_dict.h"
#include "tensor/random.h"

namespace ember::nn {

struct TrainingState {
    StateDict model;      // module.state_dict()
    StateDict optimizer;  // optimizer.state(); scalars as 0-d or 1-element tensors
    int64_t step = 0;
    StateDict hooks;      // training hooks' state (Trainer: "<hook index>.<name>")
    std::vector<Generator> rngs;                // every generator whose state must resume
    std::map<std::string, std::string> extra;  // e.g. config JSON, epoch, data cursor
};

// Writes atomically (see save_safetensors).
void save_training_checkpoint(const std::string& path, const TrainingState& s);
// Reads a file written by save_training_checkpoint; anything else is refused with a clear error.
TrainingState load_training_checkpoint(const std::string& path);

}  // namespace ember::nn
