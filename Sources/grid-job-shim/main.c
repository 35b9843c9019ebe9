// grid-job-shim: the parent of one job's processes, started by grid-agent for every assignment.
//
//   grid-job-shim --exit-file F --lease-file L --fence-grace-ms N [--keep] [--cgroup DIR]
//                 [--user UID:GID] [--chdir DIR] -- /abs/command args...
//
// Why a separate process: a job must outlive an agent that is killed or restarted, and the
// job's exit status must not be lost while no agent is there to wait for it. The shim
//   - runs the command as its child in the shim's own process group (the agent started the shim
//     as a group leader), as a child subreaper so that daemonising descendants stay in reach;
//   - ignores SIGTERM/SIGINT/SIGHUP/SIGQUIT itself, so a TERM the agent sends to the group
//     reaches the job while the shim stays to record the outcome;
//   - on SIGUSR1 (the agent's "kill now") sends SIGKILL to every other process of the group and
//     every descendant, and stays to reap them and record the outcome: a SIGKILL to the group
//     would take the shim with it and leave daemonised descendants behind;
//   - fences: reads the lease file ("DEADLINE GRACE": CLOCK_MONOTONIC milliseconds until which
//     the job may run, and the grace before it) every 100 ms; from deadline - grace it sends SIGTERM to the group, at the deadline SIGKILL to
//     every other process of the group and every descendant. This works when the agent is dead
//     or frozen (SIGSTOP), which is the case that matters. `--keep` turns fencing off;
//   - when the command ends, kills what it left behind in the group (no orphans), writes
//     "exited N fenced" or "signaled N fenced" (fenced is 0 or 1) to the exit file atomically
//     (temp file, fsync, rename, fsync of the directory), and exits with the command's status
//     (128 + signal for a signal).
// With --cgroup DIR (a directory in a delegated cgroup v2 subtree) the shim creates DIR and
// moves itself into it before it forks, so the job and everything it starts (setsid and double
// forks included) are in the job's cgroup; every kill then also covers DIR/cgroup.procs. If
// that fails the shim says so on stderr (the job's output) and goes on with the process group.
// The agent removes DIR once the shim has ended.
// With --user UID:GID (the agent's run_as for the job's account) the command runs as that user
// and group, with no supplementary groups and no_new_privs (a setuid program cannot raise it);
// the shim itself stays as it was started, to kill and reap whatever the job leaves. With
// --chdir DIR the command starts in DIR (its private work directory). If either fails the
// command is not run: the shim says why on stderr and records exit 126.
// Plain C: about 0.4 MB of private memory per running job (SwiftPM links the Swift runtime
// into every executable; those pages are shared with the agent).
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t kill_requested = 0;
static void on_usr1(int sig) { (void)sig; kill_requested = 1; }

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

// Reads "DEADLINE [GRACE]"; returns 1 and sets *out (and *grace when present) when the file
// starts with a number.
static int read_lease(const char *path, int64_t *out, int64_t *grace) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno != 0 || end == buf) return 0;
    *out = (int64_t)v;
    char *end2 = NULL;
    long long g = strtoll(end, &end2, 10);
    if (end2 != end && g >= 0) *grace = (int64_t)g;
    return 1;
}

// Signals every process whose group is `pgid` or whose parent is this shim, except the shim.
// Returns how many it signalled.
static pid_t main_child = 0;
static const char *cgroup_dir = NULL;

// Signals every pid listed in the job's cgroup except the shim; returns how many.
static int signal_cgroup(int sig) {
    if (!cgroup_dir) return 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/cgroup.procs", cgroup_dir);
    FILE *f = fopen(path, "re");
    if (!f) return 0;
    pid_t self = getpid();
    int count = 0;
    long pid;
    while (fscanf(f, "%ld", &pid) == 1) {
        if (pid <= 0 || pid == self) continue;
        char stat_path[64], stat[512];
        snprintf(stat_path, sizeof stat_path, "/proc/%ld/stat", pid);
        int fd = open(stat_path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t n = read(fd, stat, sizeof stat - 1);
            close(fd);
            if (n > 0) {
                stat[n] = 0;
                char *cp = strrchr(stat, ')');
                if (cp && cp[1] == ' ' && cp[2] == 'Z') continue;
            }
        }
        if (kill((pid_t)pid, sig) == 0) count++;
    }
    fclose(f);
    return count;
}

// Creates the job's cgroup and moves the shim into it (before the fork, so the job is born in
// it). Returns 1 on success.
static int join_cgroup(const char *dir) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "grid-job-shim: cannot create cgroup %s: %s; using the process group only\n", dir, strerror(errno));
        return 0;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/cgroup.procs", dir);
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_CREAT, 0644);
    char line[32];
    int n = snprintf(line, sizeof line, "%d\n", (int)getpid());
    if (fd < 0 || write(fd, line, (size_t)n) != n) {
        fprintf(stderr, "grid-job-shim: cannot join cgroup %s: %s; using the process group only\n", dir, strerror(errno));
        if (fd >= 0) close(fd);
        return 0;
    }
    close(fd);
    return 1;
}

static int signal_rest(pid_t pgid, int sig) {
    pid_t self = getpid();
    int count = signal_cgroup(sig);
    DIR *d = opendir("/proc");
    if (!d) {
        // Without /proc: the group for what the shim ignores, the main child for SIGKILL.
        if (sig != SIGKILL) kill(-pgid, sig);
        else if (main_child > 0) kill(main_child, SIGKILL);
        return 0;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end = NULL;
        long pid = strtol(e->d_name, &end, 10);
        if (*end != 0 || pid <= 0 || pid == self) continue;
        char path[64], stat[512];
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t n = read(fd, stat, sizeof stat - 1);
        close(fd);
        if (n <= 0) continue;
        stat[n] = 0;
        char *close_paren = strrchr(stat, ')');
        if (!close_paren) continue;
        char state = 0;
        int ppid = 0, pgrp = 0;
        if (sscanf(close_paren + 2, "%c %d %d", &state, &ppid, &pgrp) != 3) continue;
        if (state == 'Z') continue;
        if (pgrp == pgid || ppid == self) {
            if (kill((pid_t)pid, sig) == 0) count++;
        }
    }
    closedir(d);
    return count;
}

// Reaps any exited descendants handed to us as subreaper; returns the main child's status when
// it is among them.
static int reap(pid_t child, int *status, int *child_done) {
    int st = 0;
    pid_t r;
    while ((r = waitpid(-1, &st, WNOHANG)) > 0) {
        if (r == child) {
            *status = st;
            *child_done = 1;
        }
    }
    return 0;
}

static void write_exit(const char *path, int status, int fenced) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) { fprintf(stderr, "grid-job-shim: cannot write %s: %s\n", tmp, strerror(errno)); return; }
    char line[64];
    int n;
    if (WIFSIGNALED(status)) n = snprintf(line, sizeof line, "signaled %d %d\n", WTERMSIG(status), fenced);
    else n = snprintf(line, sizeof line, "exited %d %d\n", WEXITSTATUS(status), fenced);
    if (write(fd, line, (size_t)n) != n || fsync(fd) != 0) {
        fprintf(stderr, "grid-job-shim: cannot write %s: %s\n", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return;
    }
    close(fd);
    if (rename(tmp, path) != 0) { fprintf(stderr, "grid-job-shim: cannot rename %s: %s\n", tmp, strerror(errno)); unlink(tmp); return; }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) { fsync(dfd); close(dfd); }
}

// Closes every descriptor above stderr: the agent's sockets, its journal and whatever else it
// had open are none of the job's business (and a parent watching for EOF on one of them would
// otherwise wait for the job).
static void close_inherited(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) {
        for (int fd = 3; fd < 1024; fd++) close(fd);
        return;
    }
    int self = dirfd(d);
    int fds[4096];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 4096) {
        int fd = atoi(e->d_name);
        if (fd > 2 && fd != self) fds[n++] = fd;
    }
    closedir(d);
    for (int k = 0; k < n; k++) close(fds[k]);
}

static void usage(void) {
    fprintf(stderr, "usage: grid-job-shim --exit-file F --lease-file L --fence-grace-ms N [--keep] [--cgroup DIR] [--user UID:GID] [--chdir DIR] -- COMMAND [ARG...]\n"
                    "(started by grid-agent for each job; not meant to be run by hand)\n");
    exit(125);
}

int main(int argc, char **argv) {
    const char *exit_file = NULL, *lease_file = NULL, *work_dir = NULL;
    int64_t grace = 2000;
    long run_uid = -1, run_gid = -1;
    int keep = 0, i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) { i++; break; }
        if (strcmp(argv[i], "--keep") == 0) { keep = 1; continue; }
        if (i + 1 >= argc) usage();
        if (strcmp(argv[i], "--exit-file") == 0) exit_file = argv[++i];
        else if (strcmp(argv[i], "--lease-file") == 0) lease_file = argv[++i];
        else if (strcmp(argv[i], "--fence-grace-ms") == 0) grace = strtoll(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--cgroup") == 0) cgroup_dir = argv[++i];
        else if (strcmp(argv[i], "--chdir") == 0) work_dir = argv[++i];
        else if (strcmp(argv[i], "--user") == 0) {
            char *end = NULL;
            const char *spec = argv[++i];
            errno = 0;
            run_uid = strtol(spec, &end, 10);
            if (errno || end == spec || *end != ':' || run_uid < 0 || run_uid > 0x7fffffffL) usage();
            const char *g = end + 1;
            run_gid = strtol(g, &end, 10);
            if (errno || end == g || *end != '\0' || run_gid < 0 || run_gid > 0x7fffffffL) usage();
        }
        else usage();
    }
    if (!exit_file || i >= argc) usage();
    char **command = &argv[i];
    close_inherited();

    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    // The group is the job's: lead one even when started some other way than by the agent.
    if (getpgrp() != getpid()) setpgid(0, 0);
    pid_t pgid = getpgrp();
    if (cgroup_dir && !join_cgroup(cgroup_dir)) cgroup_dir = NULL;
    // Stop signals arriving between fork and the dispositions below: the child runs the command
    // with defaults, the shim ignores them.
    static const int stops[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE};
    sigset_t block, old;
    sigemptyset(&block);
    for (size_t k = 0; k < sizeof stops / sizeof stops[0]; k++) sigaddset(&block, stops[k]);
    sigprocmask(SIG_BLOCK, &block, &old);
    pid_t child = fork();
    if (child < 0) {
        fprintf(stderr, "grid-job-shim: cannot fork: %s\n", strerror(errno));
        return 125;
    }
    if (child == 0) {
        // The job starts with default dispositions and nothing blocked, whatever the shim got.
        for (size_t k = 0; k < sizeof stops / sizeof stops[0]; k++) signal(stops[k], SIG_DFL);
        signal(SIGUSR1, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (work_dir && chdir(work_dir) != 0) {
            fprintf(stderr, "grid-job-shim: cannot enter the work directory %s: %s\n", work_dir, strerror(errno));
            _exit(126);
        }
        if (run_uid >= 0) {
            gid_t gid = (gid_t)run_gid;
            if (setgroups(1, &gid) != 0 || setgid(gid) != 0 || setuid((uid_t)run_uid) != 0 ||
                getuid() != (uid_t)run_uid || geteuid() != (uid_t)run_uid || getgid() != gid) {
                fprintf(stderr, "grid-job-shim: cannot run as uid %ld gid %ld: %s (the agent must run as root for run_as)\n",
                        run_uid, run_gid, strerror(errno));
                _exit(126);
            }
            // Not even a setuid program started by the job gets more than this user has.
            if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
                fprintf(stderr, "grid-job-shim: cannot set no_new_privs: %s\n", strerror(errno));
                _exit(126);
            }
        }
        execv(command[0], command);
        fprintf(stderr, "grid-job-shim: cannot run %s: %s\n", command[0], strerror(errno));
        _exit(127);
    }
    main_child = child;
    for (size_t k = 0; k < sizeof stops / sizeof stops[0]; k++) signal(stops[k], SIG_IGN);
    struct sigaction usr1;
    memset(&usr1, 0, sizeof usr1);
    usr1.sa_handler = on_usr1;
    sigemptyset(&usr1.sa_mask);
    sigaction(SIGUSR1, &usr1, NULL);
    sigprocmask(SIG_SETMASK, &old, NULL);
    // SIGUSR1 is the agent's "kill now": it must get through even if whoever started the shim
    // had it blocked.
    sigset_t usr1_set;
    sigemptyset(&usr1_set);
    sigaddset(&usr1_set, SIGUSR1);
    sigprocmask(SIG_UNBLOCK, &usr1_set, NULL);

    int status = 0, done = 0, fenced = 0, term_sent = 0;
    int64_t deadline = 0;
    int have_lease = 0;
    while (!done) {
        reap(child, &status, &done);
        if (done) break;
        if (kill_requested) signal_rest(pgid, SIGKILL);
        if (!keep && lease_file) {
            int64_t v;
            if (read_lease(lease_file, &v, &grace)) { deadline = v; have_lease = 1; }
            if (have_lease) {
                int64_t now = now_ms();
                if (now >= deadline) {
                    fenced = 1;
                    signal_rest(pgid, SIGKILL);
                } else if (now >= deadline - grace && !term_sent) {
                    fenced = 1;
                    term_sent = 1;
                    kill(-pgid, SIGTERM);
                }
            }
        }
        sleep_ms(100);
    }
    // The command ended: what it left behind in the group ends with it (TERM, a second, KILL),
    // and the shim waits until it is really gone (a process in D state may take a while to
    // free its device) so the devices are free when the end is reported.
    int s2, d3;
    if (signal_rest(pgid, kill_requested ? SIGKILL : SIGTERM) > 0) {
        for (int k = 0; k < 20 && signal_rest(pgid, 0) > 0; k++) { sleep_ms(50); reap(-1, &s2, &d3); }
        for (int k = 0; k < 600 && signal_rest(pgid, SIGKILL) > 0; k++) { sleep_ms(50); reap(-1, &s2, &d3); }
    }
    reap(-1, &s2, &d3);
    if (exit_file) write_exit(exit_file, status, fenced);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}
