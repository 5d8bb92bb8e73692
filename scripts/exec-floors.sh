#!/usr/bin/env bash
# Per-exec cost of /bin/true in one box, in turns: the shell loop `agentbox bench` calls the floor,
# the same spawn done in C (pipes, pidfd, waitpid), and done from node --jitless through the
# guest agent's addon (the least a node agent does per exec). No channel, no protocol, no host.
# See docs/performance.md, "What a node agent can reach". Usage: scripts/exec-floors.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds="${1:-6}"
exec ./agentbox run -- sh -c "$(cat <<EOF
set -e
cd /tmp
cat > cfloor.c <<'C'
#define _GNU_SOURCE
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
extern char **environ;
int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 50;
  char *const targv[] = {"/bin/true", NULL};
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < n; i++) {
    int o[2], e[2];
    if (pipe(o) || pipe(e)) return 1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, o[1], 1);
    posix_spawn_file_actions_adddup2(&fa, e[1], 2);
    pid_t pid;
    if (posix_spawn(&pid, "/bin/true", &fa, NULL, targv, environ)) return 1;
    posix_spawn_file_actions_destroy(&fa);
    close(o[1]);
    close(e[1]);
    int pfd = syscall(SYS_pidfd_open, pid, 0);
    struct pollfd p = {pfd, POLLIN, 0};
    poll(&p, 1, -1);
    int st;
    waitpid(pid, &st, 0);
    close(pfd);
    close(o[0]);
    close(e[0]);
  }
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("%.3f\n", ((b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6) / n);
  return 0;
}
C
cat > nodefloor.cjs <<'JS'
const native = require('/run/agentbox/agentbox.node');
const fs = require('fs');
const env = ['PATH=/usr/bin:/bin', 'HOME=/root'];
const n = Number(process.argv[2] || 50);
let i = 0;
const t0 = performance.now();
(function one() {
  const [pid, , out, err, outHold, errHold] = native.spawn(['/bin/true'], env, '/root', false);
  native.watchExit(pid, () => {
    for (const fd of [outHold, errHold, out, err]) fs.closeSync(fd);
    if (++i < n) one();
    else console.log(((performance.now() - t0) / n).toFixed(3));
  });
})();
JS
gcc -O2 -o cfloor cfloor.c
r=1
while [ \$r -le $rounds ]; do
  s=\$(date +%s%N); i=0
  while [ \$i -lt 50 ]; do /bin/true; i=\$((i+1)); done
  e=\$(date +%s%N)
  echo "round \$r: shell loop \$(( (e-s)/50000 )) us, C \$(./cfloor 50) ms, node \$(node --jitless nodefloor.cjs 50 2>/dev/null) ms"
  r=\$((r+1))
done
EOF
)"
