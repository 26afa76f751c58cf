// kipvs_netns: lets the agent create kernel sockets inside another network namespace.
//
// A netlink (or any) socket belongs to the network namespace of the thread that created it, for
// its whole life. setns(CLONE_NEWNET) only moves the calling thread, so the main JS thread can
// step into a namespace, create sockets synchronously, and step back: that is withNetns().
//
// Exports:
//   withNetns(path: string, fn: () => T): T
//     open the calling thread's netns, open `path`, setns(path), call fn(), setns back, close
//     both fds. An exception thrown by fn propagates unchanged, after the thread is restored.
//     Failing to open/enter `path` throws an Error with errno (positive), code ("ENOENT"),
//     syscall ("open" | "setns") and path; fn is not called then. Failing to go back is fatal
//     (process abort): the JS thread would otherwise keep running in the wrong namespace.
//   currentNetnsId(): number
//     the inode number of the calling thread's netns (/proc/thread-self/ns/net).

#include <napi.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace {

// The calling thread's netns. /proc/thread-self exists since Linux 3.17; fall back to the tid path.
std::string ThreadNetnsPath() {
  if (access("/proc/thread-self/ns/net", F_OK) == 0) return "/proc/thread-self/ns/net";
  return "/proc/self/task/" + std::to_string(static_cast<long>(syscall(SYS_gettid))) + "/ns/net";
}

// Closes the fd on scope exit (every path, including early returns).
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

int OpenNs(const std::string& path) {
  int fd;
  do {
    fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

// Throws (as a pending JS exception) Error{errno, code, syscall, path}; message names all of them.
void ThrowErrno(Napi::Env env, int err, const char* syscall_name, const std::string& path,
                const char* what) {
  const char* code = uv_err_name(-err);
  std::string msg = std::string(what) + " '" + path + "': " + code + " (" + std::strerror(err) +
                    ")" + (err == EPERM ? " (entering a network namespace needs CAP_SYS_ADMIN)" : "");
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, code));
  e.Set("syscall", Napi::String::New(env, syscall_name));
  e.Set("path", Napi::String::New(env, path));
  e.ThrowAsJavaScriptException();
}

Napi::Value WithNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsFunction()) {
    Napi::TypeError::New(env, "withNetns(path: string, fn: function) expected")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  Napi::Function fn = info[1].As<Napi::Function>();
  if (path.empty() || path.find('\0') != std::string::npos) {
    Napi::TypeError::New(env, "withNetns: path must be a non-empty string without NUL bytes")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }

  const std::string self_path = ThreadNetnsPath();
  Fd self(OpenNs(self_path));
  if (self.get() < 0) {
    ThrowErrno(env, errno, "open", self_path, "withNetns: cannot open the current network namespace");
    return env.Undefined();
  }
  Fd target(OpenNs(path));
  if (target.get() < 0) {
    ThrowErrno(env, errno, "open", path, "withNetns: cannot open network namespace");
    return env.Undefined();
  }
  if (setns(target.get(), CLONE_NEWNET) != 0) {
    // EINVAL: `path` is not a network namespace. The thread has not moved.
    ThrowErrno(env, errno, "setns", path, "withNetns: cannot enter network namespace");
    return env.Undefined();
  }

  // With C++ exceptions disabled, a JS exception thrown by fn stays pending and Call returns an
  // empty value; it is rethrown to the caller when we return, after the thread is restored.
  Napi::Value result = fn.Call(env.Undefined(), {});

  if (setns(self.get(), CLONE_NEWNET) != 0) {
    const int err = errno;
    std::string msg = "withNetns: cannot return from network namespace '" + path + "' to '" +
                      self_path + "': " + uv_err_name(-err) + " (" + std::strerror(err) +
                      "); the JS thread would stay in the wrong network namespace";
    Napi::Error::Fatal("kipvs_netns", msg.c_str());
  }
  return result;
}

Napi::Value CurrentNetnsId(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = ThreadNetnsPath();
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    ThrowErrno(env, errno, "stat", path, "currentNetnsId: cannot stat the current network namespace");
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(st.st_ino));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("withNetns", Napi::Function::New(env, WithNetns, "withNetns"));
  exports.Set("currentNetnsId", Napi::Function::New(env, CurrentNetnsId, "currentNetnsId"));
  return exports;
}

}  // namespace

NODE_API_MODULE(kipvs_netns, Init)
