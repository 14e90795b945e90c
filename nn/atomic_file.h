// Every file Ember writes goes through here, so that none is ever left half-written.
//
// AtomicFile writes `path.tmp.<pid>` next to `path`, checks every write, fsyncs it, renames it
// over `path` (atomic on POSIX) and fsyncs the folder, so a crash, a kill or a full disk leaves
// either the old file or the new one, never a torn or empty one. Anything that fails throws an
// ember::Error naming the file and the OS's reason; the temporary file is then removed.
//
// AppendFile is for logs that grow a row at a time (metrics.csv): each append() is one checked
// write(2), so a row is in the kernel, and survives a kill -9, as soon as append() returns.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace ember::nn {

class AtomicFile {
public:
    explicit AtomicFile(const std::string& path);
    ~AtomicFile();  // without commit(): removes the temporary file, leaving `path` as it was
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;

    void write(const void* data, size_t n);
    void write(const std::string& text) { write(text.data(), text.size()); }
    // fsync, close, rename over the target, fsync the folder.
    void commit();

    const std::string& temporary_path() const { return tmp_; }

private:
    std::string path_, tmp_;
    int fd_ = -1;
    bool committed_ = false;
};

// The whole of `text` as the new contents of `path`, atomically.
void write_file_atomically(const std::string& path, const std::string& text);

// Creates the folder `dir` and any missing parents (a save_pretrained into a new folder, as
// Hugging Face's does); throws an ember::Error naming `op`, the folder and the OS's reason.
void make_folders(const std::string& dir, const std::string& op);

class AppendFile {
public:
    // Opens `path` for appending, creating it; truncate: empty it first.
    AppendFile(const std::string& path, bool truncate);
    ~AppendFile();
    AppendFile(const AppendFile&) = delete;
    AppendFile& operator=(const AppendFile&) = delete;

    void append(const std::string& text);
    void sync();  // fsync: the rows so far survive a power cut too

private:
    std::string path_;
    int fd_ = -1;
};

// Removes the temporaries (`name.tmp.<pid>`) in `dir` left by processes that no longer run
// (killed mid-save); those of live processes stay. Returns the names removed.
std::vector<std::string> remove_stale_temporaries(const std::string& dir);

}  // namespace ember::nn
