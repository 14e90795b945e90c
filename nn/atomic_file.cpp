#include "nn/atomic_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "tensor/check.h"

namespace ember::nn {

namespace {

const std::string TMP_MARK = ".tmp.";

// The OS's reason, with the fix for the two a user can act on.
std::string reason(int err) {
    std::string text = std::strerror(err);
    if (err == ENOSPC || err == EDQUOT) text += " (free some space or choose another folder)";
    if (err == EACCES || err == EROFS) text += " (choose a folder you can write to)";
    return text;
}

[[noreturn]] void fail(const std::string& path, const std::string& what, int err) {
    throw Error(make_message("cannot write ", path, ": ", what, ": ", reason(err)));
}

void write_all(int fd, const void* data, size_t n, const std::string& path, const std::string& file) {
    const auto* p = static_cast<const char*>(data);
    while (n > 0) {
        ssize_t put = ::write(fd, p, std::min<size_t>(n, size_t(1) << 30));
        if (put < 0 && errno == EINTR) continue;
        if (put < 0) fail(path, "write to " + file + " failed", errno);
        p += put, n -= size_t(put);
    }
}

std::string folder_of(const std::string& path) {
    size_t slash = path.find_last_of('/');
    return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

AtomicFile::AtomicFile(const std::string& path) : path_(path), tmp_(path + TMP_MARK + std::to_string(::getpid())) {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail(path_, "cannot create temporary file " + tmp_, errno);
}

AtomicFile::~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, size_t n) {
    EMBER_CHECK(fd_ >= 0, "AtomicFile: ", path_, " was already committed");
    write_all(fd_, data, n, path_, tmp_);
}

void AtomicFile::commit() {
    EMBER_CHECK(fd_ >= 0, "AtomicFile: ", path_, " was already committed");
    if (::fsync(fd_) != 0) fail(path_, "fsync of " + tmp_ + " failed", errno);
    int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail(path_, "close of " + tmp_ + " failed", errno);
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail(path_, "cannot rename " + tmp_ + " over it", errno);
    committed_ = true;
    // The rename is durable only once the folder is synced. Some file systems refuse fsync on
    // a folder (EINVAL); the rename has happened either way, so that is not an error.
    int dfd = ::open(folder_of(path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        int rc = ::fsync(dfd), err = errno;
        ::close(dfd);
        if (rc != 0 && err != EINVAL && err != ENOTSUP) fail(path_, "fsync of its folder failed", err);
    }
}

void write_file_atomically(const std::string& path, const std::string& text) {
    AtomicFile f(path);
    f.write(text);
    f.commit();
}

void make_folders(const std::string& dir, const std::string& op) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    EMBER_CHECK(!ec, op, ": cannot create the folder ", dir, ": ", ec.message(), " (choose a folder you can write to)");
}

AppendFile::AppendFile(const std::string& path, bool truncate) : path_(path) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0644);
    if (fd_ < 0) fail(path_, "cannot open it for appending", errno);
}

AppendFile::~AppendFile() {
    if (fd_ >= 0) ::close(fd_);
}

void AppendFile::append(const std::string& text) { write_all(fd_, text.data(), text.size(), path_, path_); }

void AppendFile::sync() {
    if (::fsync(fd_) != 0) fail(path_, "fsync failed", errno);
}

std::vector<std::string> remove_stale_temporaries(const std::string& dir) {
    std::vector<std::string> removed;
    DIR* d = ::opendir(dir.c_str());
    if (!d) return removed;
    while (dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        size_t mark = name.rfind(TMP_MARK);
        if (mark == std::string::npos || mark == 0) continue;
        std::string pid_text = name.substr(mark + TMP_MARK.size());
        if (pid_text.empty() || pid_text.size() > 9 ||
            !std::all_of(pid_text.begin(), pid_text.end(), [](char c) { return c >= '0' && c <= '9'; }))
            continue;
        pid_t pid = pid_t(std::stol(pid_text));
        if (pid <= 0 || pid == ::getpid()) continue;
        if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to judge)
        if (::unlink((dir + "/" + name).c_str()) == 0) removed.push_back(name);
    }
    ::closedir(d);
    std::sort(removed.begin(), removed.end());
    return removed;
}

}  // namespace ember::nn
