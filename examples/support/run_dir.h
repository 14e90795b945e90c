// The --out folder of a run: locked while the run uses it, cleaned of temporaries that killed
// runs left, and never taken over silently.
//
//   RunDir dir("gpt train", out);              // creates it, locks it (a second run is refused)
//   bool resuming = dir.start_training(resume, overwrite);   // says what the run will do
#pragma once

#include <string>

namespace ember::examples {

class RunDir {
public:
    // Creates `out` if needed and takes its lock (`out/.lock`, held until destruction or exit);
    // throws, naming the process that holds it, when another run uses the folder. Then removes
    // the temporary files of dead processes (a kill -9 mid-save leaves a full-size one).
    RunDir(const std::string& command, const std::string& out);
    ~RunDir();
    RunDir(const RunDir&) = delete;
    RunDir& operator=(const RunDir&) = delete;

    // A training run's choice, made before it writes anything. With a checkpoint in the folder,
    // --resume continues it and --overwrite starts over (the old files are replaced as the new
    // run saves); neither is an error that names both. Without one, --resume says it starts
    // from step 1. Returns whether a checkpoint will be resumed.
    bool start_training(bool resume, bool overwrite) const;

    std::string checkpoint() const { return out_ + "/checkpoint.safetensors"; }

private:
    std::string command_, out_;
    int lock_fd_ = -1;
};

}  // namespace ember::examples
