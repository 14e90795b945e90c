#include "examples/support/run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>

#include "nn/atomic_file.h"
#include "tensor/check.h"

namespace ember::examples {

static bool exists(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
}

RunDir::RunDir(const std::string& command, const std::string& out) : command_(command), out_(out) {
    nn::make_folders(out, command + " --out");
    const std::string lock = out + "/.lock";
    lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    EMBER_CHECK(lock_fd_ >= 0, command, ": cannot create ", lock, ": ", std::strerror(errno));
    // flock is released by the kernel when the process ends, however it ends: a killed run
    // never leaves the folder locked.
    if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        char pid[32] = {};
        ssize_t got = ::pread(lock_fd_, pid, sizeof pid - 1, 0);
        ::close(lock_fd_);
        lock_fd_ = -1;
        EMBER_CHECK(err != EWOULDBLOCK, command, ": ", out, " is in use by another run (pid ",
                    got > 0 ? std::string(pid, size_t(got)) : std::string("unknown"),
                    "); wait for it to finish or choose another --out");
        throw Error(make_message(command, ": cannot lock ", lock, ": ", std::strerror(err)));
    }
    std::string pid = std::to_string(::getpid());
    if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, pid.data(), pid.size(), 0) != ssize_t(pid.size()))
        throw Error(make_message(command, ": cannot write ", lock, ": ", std::strerror(errno)));
    for (const std::string& name : nn::remove_stale_temporaries(out))
        std::cout << command << ": removed " << out << "/" << name << ", left by a run that was killed while saving\n";
}

RunDir::~RunDir() {
    if (lock_fd_ >= 0) ::close(lock_fd_);  // closing releases the lock
}

bool RunDir::start_training(bool resume, bool overwrite) const {
    EMBER_CHECK(!(resume && overwrite), command_, ": --resume continues a run and --overwrite replaces it; pass one");
    bool has_checkpoint = exists(checkpoint());
    bool has_model = exists(out_ + "/model.safetensors");
    if (resume) {
        if (!has_checkpoint)
            std::cout << command_ << ": --resume, but " << out_ << " holds no checkpoint.safetensors: starting from step 1\n";
        return has_checkpoint;
    }
    if (has_checkpoint || has_model) {
        EMBER_CHECK(overwrite, command_, ": ", out_, " already holds a run (",
                    has_checkpoint ? "checkpoint.safetensors" : "model.safetensors",
                    "); pass --resume to continue it, --overwrite to start over and replace it, or choose another --out");
        std::cout << command_ << ": --overwrite: starting over in " << out_
                  << "; its checkpoint, model and metrics are replaced as this run saves\n";
    }
    return false;
}

}  // namespace ember::examples
