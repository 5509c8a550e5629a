/*
 * The pod sandbox's process (the CRI's sandbox image, routemeter/pause): it holds the
 * pod's namespaces open, reaps the zombies it inherits when the pod shares its PID
 * namespace, and exits 0 on SIGTERM or SIGINT. Built static (`gcc -static -Os -s`), so
 * the image holds this one file.
 *
 * The signals are blocked outside sigsuspend(), so one that arrives between the check
 * and the wait is not lost.
 */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
  if (sig != SIGCHLD) {
    stop = 1;
  }
}

static void say(const char *msg) {
  (void)!write(2, msg, strlen(msg));
}

int main(void) {
  sigset_t wanted, old;
  struct sigaction sa;
  int sigs[] = {SIGTERM, SIGINT, SIGCHLD};

  if (getpid() != 1) {
    say("pause: warning: not PID 1\n");
  }
  sigemptyset(&wanted);
  for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
    sigaddset(&wanted, sigs[i]);
  }
  if (sigprocmask(SIG_BLOCK, &wanted, &old) != 0) {
    say("pause: sigprocmask failed\n");
    return 1;
  }
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_mask = wanted;
  sa.sa_flags = SA_NOCLDSTOP;
  for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
    if (sigaction(sigs[i], &sa, NULL) != 0) {
      say("pause: sigaction failed\n");
      return 1;
    }
  }
  sigdelset(&old, SIGTERM);
  sigdelset(&old, SIGINT);
  sigdelset(&old, SIGCHLD);
  while (!stop) {
    sigsuspend(&old);
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
  }
  return 0;
}
