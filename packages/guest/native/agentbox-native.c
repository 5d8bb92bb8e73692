/*
 * agentbox-native: the few system calls the guest agent needs and node does not offer, as a
 * Node-API addon (ABI-stable: built once against any node's headers, loaded by the image's node).
 *
 * spawn: posix_spawn (glibc: clone(CLONE_VM|CLONE_VFORK)) instead of node's fork(). Under
 *   emulation a fork of the ~50 MB agent costs 10-30 ms of page-table copies and copy-on-write
 *   faults; a helper process avoided that but every round trip to it cost ~1.8 ms (each switch
 *   between processes flushes TCG's whole TLB). In-process, a spawn costs what the exec costs.
 * watchExit: a pidfd on the event loop (uv_poll), reaped with waitpid when it turns readable.
 * restore: what a VM restored from a snapshot needs: set the clock, credit entropy and reseed
 *   the kernel RNG (writing to /dev/urandom only mixes; the key changes on RNDRESEEDCRNG), bind a
 *   new boot id over the kernel's, set the hostname.
 * writeFrame: a frame header, then bytes moved by the kernel from a pipe (splice) or a file
 *   (sendfile) to the channel, never through JavaScript. Under emulation each copy of a
 *   byte costs ~4 ns (the CPU is emulated, memcpy too): read + write of process output ran at
 *   ~38 MB/s, splice from the pipe at ~88, sendfile of a file at ~170 (docs/performance.md).
 * watchReadable: a level-triggered readiness watch (uv_poll) on a pipe the agent splices from.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <node_api.h>
#include <signal.h>
#include <stdio.h>
#include <spawn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/sendfile.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

/* The pipe buffer a child writes into: bigger than the 64 KiB default, so a fast writer is not
 * woken for every 64 KiB (each wake-up is a context switch, costly under emulation). */
#define PIPE_BYTES (1 << 20)
#define MAX_STRINGS 65536

/* Signals the agent ignores: a child must not inherit that (handled ones reset on exec anyway). */
static sigset_t ignored_signals;

static napi_value throw_errno(napi_env env, int err, const char *what) {
  char code[32], message[256];
  const char *name = strerrorname_np(err);
  snprintf(code, sizeof code, "%s", name ? name : "EUNKNOWN");
  snprintf(message, sizeof message, "%s: %s", what, strerror(err));
  napi_throw_error(env, code, message);
  return NULL;
}

/* A JS string as a malloc'd C string (NULL on failure, an exception then pending). */
static char *string_arg(napi_env env, napi_value value) {
  size_t len;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a string");
    return NULL;
  }
  char *s = malloc(len + 1);
  if (!s) return NULL;
  napi_get_value_string_utf8(env, value, s, len + 1, &len);
  if (strlen(s) != len) { /* an embedded NUL */
    free(s);
    napi_throw_type_error(env, "EINVAL", "strings may not contain NUL");
    return NULL;
  }
  return s;
}

/* A JS array of strings as a NULL-terminated vector (free with free_vector). */
static char **vector_arg(napi_env env, napi_value array) {
  uint32_t n;
  if (napi_get_array_length(env, array, &n) != napi_ok || n > MAX_STRINGS) {
    napi_throw_type_error(env, NULL, "expected an array of strings");
    return NULL;
  }
  char **v = calloc(n + 1, sizeof(char *));
  if (!v) return NULL;
  for (uint32_t i = 0; i < n; i++) {
    napi_value item;
    napi_get_element(env, array, i, &item);
    if (!(v[i] = string_arg(env, item))) {
      for (uint32_t j = 0; j < i; j++) free(v[j]);
      free(v);
      return NULL;
    }
  }
  return v;
}

static void free_vector(char **v) {
  if (!v) return;
  for (char **p = v; *p; p++) free(*p);
  free(v);
}

/* Resolves a command like execvp, but against the PATH of the child's environment. */
static int resolve(const char *file, char *const env[], char *out, size_t outlen) {
  if (strchr(file, '/')) {
    if (strlen(file) >= outlen) return ENAMETOOLONG;
    strcpy(out, file);
    return access(out, X_OK) == 0 ? 0 : errno;
  }
  const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (char *const *e = env; *e; e++)
    if (strncmp(*e, "PATH=", 5) == 0) path = *e + 5;
  int denied = 0;
  while (*path) {
    const char *end = strchr(path, ':');
    size_t dirlen = end ? (size_t)(end - path) : strlen(path);
    if (dirlen + 1 + strlen(file) + 1 <= outlen) {
      if (dirlen == 0) strcpy(out, file);
      else {
        memcpy(out, path, dirlen);
        out[dirlen] = '/';
        strcpy(out + dirlen + 1, file);
      }
      struct stat st;
      if (stat(out, &st) == 0 && S_ISREG(st.st_mode)) {
        if (access(out, X_OK) == 0) return 0;
        denied = 1;
      }
    }
    if (!end) break;
    path = end + 1;
  }
  return denied ? EACCES : ENOENT;
}

/* A pipe whose `ours` end is non-blocking (for libuv) and close-on-exec; the child's is neither. */
static int make_pipe(int fds[2], int ours) {
  if (pipe2(fds, O_CLOEXEC) != 0) return errno;
  (void)fcntl(fds[1], F_SETPIPE_SZ, PIPE_BYTES);
  int flags = fcntl(fds[ours], F_GETFL);
  if (flags < 0 || fcntl(fds[ours], F_SETFL, flags | O_NONBLOCK) != 0) return errno;
  return 0;
}

/* spawn(argv, env, cwd, withStdin) -> [pid, stdinFd | -1, stdoutFd, stderrFd, stdoutHold, stderrHold] */
static napi_value spawn_process(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value args[4];
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  if (argc < 4) {
    napi_throw_type_error(env, NULL, "spawn(argv, env, cwd, withStdin)");
    return NULL;
  }
  bool with_stdin;
  napi_get_value_bool(env, args[3], &with_stdin);
  char **argv = vector_arg(env, args[0]);
  char **envp = argv ? vector_arg(env, args[1]) : NULL;
  char *cwd = envp ? string_arg(env, args[2]) : NULL;
  napi_value result = NULL;
  if (!cwd) goto out;
  if (!argv[0]) {
    napi_throw_type_error(env, NULL, "argv is empty");
    goto out;
  }
  char file[4096];
  int err = resolve(argv[0], envp, file, sizeof file);
  if (err) {
    throw_errno(env, err, argv[0]);
    goto out;
  }
  int in[2] = {-1, -1}, outp[2] = {-1, -1}, errp[2] = {-1, -1};
  if ((with_stdin && (err = make_pipe(in, 1))) || (err = make_pipe(outp, 0)) || (err = make_pipe(errp, 0))) {
    int all[6] = {in[0], in[1], outp[0], outp[1], errp[0], errp[1]};
    for (int i = 0; i < 6; i++)
      if (all[i] >= 0) close(all[i]);
    throw_errno(env, err, "pipe");
    goto out;
  }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  if (with_stdin) posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  else posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, outp[1], 1);
  posix_spawn_file_actions_adddup2(&fa, errp[1], 2);
  posix_spawn_file_actions_addchdir_np(&fa, cwd);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &ignored_signals);
  /* Its own session and process group, so a timeout or cancel can kill what it started too. */
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid;
  err = posix_spawn(&pid, file, &fa, &attr, argv, envp);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (in[0] >= 0) close(in[0]);
  if (err) {
    int ours[5] = {in[1], outp[0], outp[1], errp[0], errp[1]};
    for (int i = 0; i < 5; i++)
      if (ours[i] >= 0) close(ours[i]);
    throw_errno(env, err, argv[0]);
    goto out;
  }
  /*
   * The write ends of stdout and stderr stay open here (close-on-exec, so no later child gets
   * them) until the caller saw the exit: a process's exit then does not wake the agent twice
   * (once for the pipes' hang-up, once for the exit), which under emulation costs ~0.7 ms.
   */
  napi_create_array_with_length(env, 6, &result);
  int values[6] = {pid, in[1], outp[0], errp[0], outp[1], errp[1]};
  for (uint32_t i = 0; i < 6; i++) {
    napi_value v;
    napi_create_int32(env, values[i], &v);
    napi_set_element(env, result, i, v);
  }
out:
  free_vector(argv);
  free_vector(envp);
  free(cwd);
  return result;
}

struct exit_watch {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
  pid_t pid;
  int pidfd;
};

static void on_watch_closed(uv_handle_t *handle) { free(handle->data); }

static void on_pidfd(uv_poll_t *poll, int status, int events) {
  (void)events;
  struct exit_watch *w = poll->data;
  int wstatus = 0;
  pid_t reaped = waitpid(w->pid, &wstatus, WNOHANG);
  if (reaped == 0 && status == 0) return; /* not yet */
  if (reaped < 0) wstatus = -1;           /* not ours any more: report it as lost */
  uv_poll_stop(poll);
  close(w->pidfd);
  napi_env env = w->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, recv, arg, ignored;
  napi_get_reference_value(env, w->callback, &cb);
  napi_get_global(env, &recv); /* napi_make_callback wants an object as `this` */
  napi_create_int32(env, wstatus, &arg);
  napi_make_callback(env, w->context, recv, cb, 1, &arg, &ignored);
  napi_delete_reference(env, w->callback);
  napi_async_destroy(env, w->context);
  napi_close_handle_scope(env, scope);
  uv_close((uv_handle_t *)poll, on_watch_closed);
}

/* watchExit(pid, callback(waitStatus)): the status is -1 when the process could not be reaped. */
static napi_value watch_exit(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value args[2];
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  int32_t pid;
  if (argc < 2 || napi_get_value_int32(env, args[0], &pid) != napi_ok || pid <= 0) {
    napi_throw_type_error(env, NULL, "watchExit(pid, callback)");
    return NULL;
  }
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd < 0) return throw_errno(env, errno, "pidfd_open");
  struct exit_watch *w = calloc(1, sizeof *w);
  uv_loop_t *loop;
  napi_value name;
  if (!w || napi_get_uv_event_loop(env, &loop) != napi_ok) {
    close(pidfd);
    free(w);
    return throw_errno(env, ENOMEM, "watchExit");
  }
  w->env = env;
  w->pid = pid;
  w->pidfd = pidfd;
  w->poll.data = w;
  napi_create_reference(env, args[1], 1, &w->callback);
  napi_create_string_utf8(env, "agentbox:exit", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &w->context);
  if (uv_poll_init(loop, &w->poll, pidfd) != 0 || uv_poll_start(&w->poll, UV_READABLE, on_pidfd) != 0) {
    close(pidfd);
    napi_delete_reference(env, w->callback);
    napi_async_destroy(env, w->context);
    free(w);
    return throw_errno(env, EINVAL, "uv_poll");
  }
  return NULL;
}

enum { RESTORE_CLOCK = 1, RESTORE_ENTROPY = 2, RESTORE_BOOT_ID = 4, RESTORE_HOSTNAME = 8 };

/*
 * restore(nowMs, receivedMonoNs, entropy | null, [bootIdSource, bootIdTarget] | null, hostname | null)
 *   -> { done, errno }: the steps that worked (bit mask), errno of the first that failed.
 * The clock is set to the host's time when the agent received it, plus what has passed since.
 */
static napi_value restore(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value args[5];
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  if (argc < 5) {
    napi_throw_type_error(env, NULL, "restore(nowMs, receivedMonoNs, entropy, bootId, hostname)");
    return NULL;
  }
  uint32_t done = 0;
  int first_err = 0;
  napi_valuetype type;
#define FAILED()                     \
  do {                               \
    if (!first_err) first_err = errno; \
  } while (0)

  double now_ms;
  napi_typeof(env, args[0], &type);
  if (type == napi_number && napi_get_value_double(env, args[0], &now_ms) == napi_ok) {
    uint64_t received;
    bool lossless;
    napi_get_value_bigint_uint64(env, args[1], &received, &lossless);
    struct timespec mono, wall;
    clock_gettime(CLOCK_MONOTONIC, &mono);
    uint64_t since = (uint64_t)mono.tv_sec * 1000000000u + (uint64_t)mono.tv_nsec - received;
    uint64_t ns = (uint64_t)(now_ms * 1e6) + since;
    wall.tv_sec = (time_t)(ns / 1000000000u);
    wall.tv_nsec = (long)(ns % 1000000000u);
    if (clock_settime(CLOCK_REALTIME, &wall) == 0) done |= RESTORE_CLOCK;
    else FAILED();
  }
  bool is_buffer = false;
  napi_is_buffer(env, args[2], &is_buffer);
  if (is_buffer) {
    void *data;
    size_t len;
    napi_get_buffer_info(env, args[2], &data, &len);
    struct {
      struct rand_pool_info info;
      char bytes[4096];
    } pool;
    if (len > sizeof pool.bytes) len = sizeof pool.bytes;
    pool.info.entropy_count = (int)len * 8;
    pool.info.buf_size = (int)len;
    memcpy(pool.bytes, data, len);
    int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    if (fd >= 0 && ioctl(fd, RNDADDENTROPY, &pool) == 0 && ioctl(fd, RNDRESEEDCRNG) == 0) done |= RESTORE_ENTROPY;
    else FAILED();
    if (fd >= 0) close(fd);
  }
  bool is_array = false;
  napi_is_array(env, args[3], &is_array);
  if (is_array) {
    char **paths = vector_arg(env, args[3]);
    if (!paths) return NULL;
    if (paths[0] && paths[1]) {
      /* A restore of a restore: the previous clone's bind goes first. */
      (void)umount2(paths[1], MNT_DETACH);
      if (mount(paths[0], paths[1], NULL, MS_BIND, NULL) == 0) done |= RESTORE_BOOT_ID;
      else FAILED();
    }
    free_vector(paths);
  }
  napi_typeof(env, args[4], &type);
  if (type == napi_string) {
    char *name = string_arg(env, args[4]);
    if (!name) return NULL;
    if (sethostname(name, strlen(name)) == 0) done |= RESTORE_HOSTNAME;
    else FAILED();
    free(name);
  }
#undef FAILED
  napi_value result, v;
  napi_create_object(env, &result);
  napi_create_uint32(env, done, &v);
  napi_set_named_property(env, result, "done", v);
  const char *err_name = first_err ? strerrorname_np(first_err) : NULL;
  if (first_err) {
    napi_create_string_utf8(env, err_name ? err_name : "EUNKNOWN", NAPI_AUTO_LENGTH, &v);
    napi_set_named_property(env, result, "error", v);
  }
  return result;
}

/* How long a frame write may wait for the peer to drain before it fails (the agent is blocked meanwhile). */
#define WRITE_STALL_MS 10000

/* Waits until fd is writable; ETIMEDOUT after WRITE_STALL_MS. */
static int wait_writable(int fd) {
  struct pollfd p = {fd, POLLOUT, 0};
  int n = poll(&p, 1, WRITE_STALL_MS);
  if (n < 0) return errno == EINTR ? 0 : errno;
  return n == 0 ? ETIMEDOUT : 0;
}

/* Writes all of buf to fd, waiting when it would block. */
static int write_all_fd(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    int err = 0;
    if (n > 0) {
      buf += n;
      len -= (size_t)n;
    } else if (n < 0 && errno == EAGAIN) {
      err = wait_writable(fd);
    } else if (n < 0 && errno != EINTR) {
      err = errno;
    }
    if (err) return err;
  }
  return 0;
}

/*
 * A process's pipe is not spliced to the channel directly: virtio_console's splice takes pages
 * from the pipe, and a splice that leaves part of the pipe behind wedged the guest (6.1). So a
 * frame's bytes are first moved (zero-copy) into this pipe of the agent's own, which then goes to
 * the channel whole, with no writer racing it.
 */
static int staging[2] = {-1, -1};

static int staging_pipe(void) {
  if (staging[0] >= 0) return 0;
  if (pipe2(staging, O_CLOEXEC | O_NONBLOCK) != 0) return errno;
  if (fcntl(staging[1], F_SETPIPE_SZ, PIPE_BYTES) < 0) {
    int err = errno;
    close(staging[0]);
    close(staging[1]);
    staging[0] = staging[1] = -1;
    return err;
  }
  return 0;
}

/* Moves up to `length` bytes waiting in pipe `from_fd` into the staging pipe; returns how many. */
static int64_t stage(int from_fd, int64_t length, int *err) {
  int64_t staged = 0;
  while (staged < length) {
    ssize_t n = splice(from_fd, NULL, staging[1], NULL, (size_t)(length - staged), SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) staged += n;
    else if (n == 0 || errno == EAGAIN) break; /* fewer than promised: the rest is padding */
    else if (errno != EINTR) {
      *err = errno;
      break;
    }
  }
  return staged;
}

/* Moves everything in the staging pipe to out_fd. */
static int send_staged(int out_fd, int64_t bytes) {
  int64_t sent = 0;
  while (sent < bytes) {
    /* Ask for more than it holds: virtio_console must take whole pipe buffers (see staging). */
    ssize_t n = splice(staging[0], NULL, out_fd, NULL, PIPE_BYTES, SPLICE_F_MOVE | SPLICE_F_MORE);
    int err = 0;
    if (n > 0) sent += n;
    else if (n == 0 || errno == EAGAIN) err = wait_writable(out_fd);
    else if (errno != EINTR) err = errno;
    if (err) return err;
  }
  return 0;
}

/*
 * writeFrame(outFd, header, fromFd, offset, length) -> bytes that came from fromFd (== length
 * unless it had fewer: the rest of the frame is then zero padding, so the stream stays framed).
 * offset < 0: fromFd is a pipe holding at least `length` bytes (FIONREAD said so), at most
 * PIPE_BYTES; else a file, sent with sendfile from that offset. The caller guarantees nothing else
 * is queued on outFd, so header and payload stay together; it waits while outFd is full (the
 * channel's credit bounds how long, WRITE_STALL_MS at most).
 */
static napi_value write_frame(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value args[5];
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  int32_t out_fd, from_fd;
  int64_t offset, length;
  void *header;
  size_t header_len;
  bool is_buffer = false;
  if (argc < 5) goto usage;
  napi_is_buffer(env, args[1], &is_buffer);
  if (!is_buffer || napi_get_value_int32(env, args[0], &out_fd) != napi_ok ||
      napi_get_value_int32(env, args[2], &from_fd) != napi_ok ||
      napi_get_value_int64(env, args[3], &offset) != napi_ok ||
      napi_get_value_int64(env, args[4], &length) != napi_ok || length < 0)
    goto usage;
  napi_get_buffer_info(env, args[1], &header, &header_len);
  int err = 0;
  int64_t moved = 0;
  if (offset < 0) {
    if (length > PIPE_BYTES) goto usage;
    if ((err = staging_pipe())) return throw_errno(env, err, "pipe");
    moved = stage(from_fd, length, &err);
    if (!err) err = write_all_fd(out_fd, header, header_len);
    if (!err) err = send_staged(out_fd, moved);
    if (err) {
      /* What is left in it belongs to a frame that will not be finished. */
      close(staging[0]);
      close(staging[1]);
      staging[0] = staging[1] = -1;
      return throw_errno(env, err, "splice");
    }
  } else {
    if ((err = write_all_fd(out_fd, header, header_len))) return throw_errno(env, err, "write");
    off_t off = (off_t)offset;
    while (moved < length) {
      ssize_t n = sendfile(out_fd, from_fd, &off, (size_t)(length - moved));
      if (n > 0) {
        moved += n;
      } else if (n == 0) {
        break; /* the file ended */
      } else if (errno == EAGAIN) {
        if ((err = wait_writable(out_fd))) return throw_errno(env, err, "waiting for the channel");
      } else if (errno != EINTR) {
        return throw_errno(env, errno, "sendfile");
      }
    }
  }
  if (moved < length) {
    /* Keep the stream framed: the frame said `length` bytes. The caller reports the short read. */
    static const char zeros[65536];
    int64_t left = length - moved;
    while (left > 0 && !err) {
      size_t n = left > (int64_t)sizeof zeros ? sizeof zeros : (size_t)left;
      err = write_all_fd(out_fd, zeros, n);
      left -= (int64_t)n;
    }
    if (err) return throw_errno(env, err, "write");
  }
  napi_value result;
  napi_create_int64(env, moved, &result);
  return result;
usage:
  napi_throw_type_error(env, NULL, "writeFrame(outFd, header, fromFd, offset, length)");
  return NULL;
}

/* pipeBytes(fd) -> bytes waiting in a pipe (FIONREAD). */
static napi_value pipe_bytes(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value arg;
  int32_t fd;
  napi_get_cb_info(env, info, &argc, &arg, NULL, NULL);
  if (argc < 1 || napi_get_value_int32(env, arg, &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "pipeBytes(fd)");
    return NULL;
  }
  int n = 0;
  if (ioctl(fd, FIONREAD, &n) != 0) return throw_errno(env, errno, "FIONREAD");
  napi_value result;
  napi_create_int32(env, n, &result);
  return result;
}

/* makeFifo(path, mode): mkfifo(3), which node has no binding for (a process for it costs ~20 ms). */
static napi_value make_fifo(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value args[2];
  int32_t mode;
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  if (argc < 2 || napi_get_value_int32(env, args[1], &mode) != napi_ok) {
    napi_throw_type_error(env, NULL, "makeFifo(path, mode)");
    return NULL;
  }
  char *path = string_arg(env, args[0]);
  if (!path) return NULL;
  int rc = mkfifo(path, (mode_t)mode), err = errno;
  free(path);
  return rc == 0 ? NULL : throw_errno(env, err, "mkfifo");
}

/* punchHole(path, offset, length): frees a file's blocks in that range, its size kept (fallocate(2)). */
static napi_value punch_hole(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value args[3];
  int64_t offset, length;
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  if (argc < 3 || napi_get_value_int64(env, args[1], &offset) != napi_ok ||
      napi_get_value_int64(env, args[2], &length) != napi_ok || offset < 0 || length <= 0) {
    napi_throw_type_error(env, NULL, "punchHole(path, offset, length)");
    return NULL;
  }
  char *path = string_arg(env, args[0]);
  if (!path) return NULL;
  int fd = open(path, O_WRONLY | O_CLOEXEC), err = errno;
  free(path);
  if (fd < 0) return throw_errno(env, err, "open");
  int rc = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length);
  err = errno;
  close(fd);
  return rc == 0 ? NULL : throw_errno(env, err, "fallocate");
}

struct readable_watch {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
  int active;
};

static void on_readable(uv_poll_t *poll, int status, int events) {
  struct readable_watch *w = poll->data;
  napi_env env = w->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, recv, arg, ignored;
  napi_get_reference_value(env, w->callback, &cb);
  napi_get_global(env, &recv);
  /* 1: readable, 2: the writer went away (hang-up) or the fd failed */
  napi_create_int32(env, (events & UV_READABLE ? 1 : 0) | (status < 0 || (events & UV_DISCONNECT) ? 2 : 0), &arg);
  napi_make_callback(env, w->context, recv, cb, 1, &arg, &ignored);
  napi_close_handle_scope(env, scope);
}

static void on_readable_closed(uv_handle_t *handle) { free(handle->data); }

static napi_value readable_control(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value arg, self;
  void *data;
  napi_get_cb_info(env, info, &argc, &arg, &self, &data);
  struct readable_watch *w;
  if (napi_unwrap(env, self, (void **)&w) != napi_ok || !w) return NULL;
  int op = (int)(intptr_t)data; /* 0 pause, 1 resume, 2 close */
  if (op == 0 && w->active) {
    uv_poll_stop(&w->poll);
    w->active = 0;
  } else if (op == 1 && !w->active) {
    uv_poll_start(&w->poll, UV_READABLE | UV_DISCONNECT, on_readable);
    w->active = 1;
  } else if (op == 2) {
    napi_remove_wrap(env, self, NULL);
    uv_poll_stop(&w->poll);
    napi_delete_reference(env, w->callback);
    napi_async_destroy(env, w->context);
    uv_close((uv_handle_t *)&w->poll, on_readable_closed);
  }
  return NULL;
}

/* watchReadable(fd, callback(events)) -> { pause(), resume(), close() }; starts paused. */
static napi_value watch_readable(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value args[2];
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  int32_t fd;
  if (argc < 2 || napi_get_value_int32(env, args[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "watchReadable(fd, callback)");
    return NULL;
  }
  uv_loop_t *loop;
  struct readable_watch *w = calloc(1, sizeof *w);
  if (!w || napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init(loop, &w->poll, fd) != 0) {
    free(w);
    return throw_errno(env, EINVAL, "uv_poll");
  }
  w->env = env;
  w->poll.data = w;
  napi_value name, handle, fn;
  napi_create_reference(env, args[1], 1, &w->callback);
  napi_create_string_utf8(env, "agentbox:readable", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &w->context);
  napi_create_object(env, &handle);
  napi_wrap(env, handle, w, NULL, NULL, NULL);
  const char *names[3] = {"pause", "resume", "close"};
  for (intptr_t i = 0; i < 3; i++) {
    napi_create_function(env, names[i], NAPI_AUTO_LENGTH, readable_control, (void *)i, &fn);
    napi_set_named_property(env, handle, names[i], fn);
  }
  return handle;
}

static napi_value init(napi_env env, napi_value exports) {
  sigemptyset(&ignored_signals);
  sigaddset(&ignored_signals, SIGPIPE);
  for (int sig = 1; sig < NSIG; sig++) {
    struct sigaction sa;
    if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN) sigaddset(&ignored_signals, sig);
  }
  napi_property_descriptor props[] = {
      {"spawn", NULL, spawn_process, NULL, NULL, NULL, napi_default, NULL},
      {"watchExit", NULL, watch_exit, NULL, NULL, NULL, napi_default, NULL},
      {"restore", NULL, restore, NULL, NULL, NULL, napi_default, NULL},
      {"writeFrame", NULL, write_frame, NULL, NULL, NULL, napi_default, NULL},
      {"pipeBytes", NULL, pipe_bytes, NULL, NULL, NULL, napi_default, NULL},
      {"makeFifo", NULL, make_fifo, NULL, NULL, NULL, napi_default, NULL},
      {"punchHole", NULL, punch_hole, NULL, NULL, NULL, napi_default, NULL},
      {"watchReadable", NULL, watch_readable, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(agentbox_native, init)
