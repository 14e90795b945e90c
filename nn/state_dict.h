// StateDict: a model's (or optimizer's) named tensors, sorted by name. It is what modules hand to
// checkpoints and take back from them; nothing more than an ordered map.
#pragma once

#include <map>
#include <string>

#include "tensor/tensor.h"

namespace ember::nn {

using StateDict = std::map<std::string, Tensor>;

}  // namespace ember::nn
