"""The commented sample configuration `heartline init` writes: every key, its default, one line
of meaning. A test keeps it complete (every key the loader knows appears) and valid."""

from __future__ import annotations

SAMPLE = """\
# heartline.toml: what heartline supervises and how.
# Written by `heartline init`. Every key is shown with its default; a commented-out key is
# the default. Durations: "250ms", "10s", "5m", "2h", "1d" (at most "365d"). Sizes: "10MB",
# "512KiB". Paths are relative to this file. Check it with `heartline -c FILE status` once
# the daemon runs, or just start it: `heartline -c FILE up`.

[daemon]
# run_dir = "/run/heartline"        # control socket and state (not root:
#                                   #   $XDG_RUNTIME_DIR/heartline, else /tmp/heartline-UID)
# log_dir = "/var/log/heartline"    # programs' logs (not root: ~/.local/state/heartline/logs)
# adopt_timeout = "60s"             # after a daemon crash, how long programs wait to be adopted
#                                   #   by a new daemon before they are stopped

[defaults]                          # any program key below, applied to every program
# stop_timeout = "10s"

[programs.example]                  # the name is what status, logs, start and stop use
command = ["/bin/sleep", "3600"]    # an argv list, run as is: no shell
# shell = false                     # true: command is one string for /bin/sh -c
# env = {}                          # extra variables, e.g. { LANG = "C.UTF-8" }
# cwd = "/"                         # working directory (default: the daemon's)
# user = "www-data"                 # run as this user (the daemon must run as root)
# group = "www-data"                # and/or this group (default: the user's own)
# umask = "022"                     # file mode mask (default: the daemon's)
# numprocs = 1                      # instances example:0, example:1... (address all as example)
# autostart = true                  # start with the daemon
# after = []                        # start after these programs were started
# requires = []                     # start once these run (or exited successfully)
# restart = "on-failure"            # always | on-failure | never
# success_exit_codes = [0]          # exits that count as success
# prevent_restart_exit_codes = []   # exits that keep it down even with restart = "always"
# stop_signal = "TERM"              # sent to the program's whole process group
# stop_timeout = "10s"              # then SIGKILL
# backoff.initial = "100ms"         # delay before the 2nd quick restart in a row, doubling...
# backoff.max = "30s"               # ...up to this
# backoff.factor = 2.0              # growth of the delay per failure
# backoff.jitter = 0.1              # +-10 % spread, so programs do not restart in lockstep
# backoff.reset_after = "10s"       # a run this long forgets earlier failures
# crash_loop.max_starts = 10        # this many starts (0: no limit)...
# crash_loop.window = "60s"         # ...within this window make it fatal...
# crash_loop.cooldown = "5m"        # ...until this has passed ("never": until started by hand)
# ready_after = "0s"                # counts as running after this long up
# log.max_size = "10MiB"            # per stream, then the file is rotated
# log.backups = 5                   # rotated files kept
# redirect_stderr = false           # stderr into the stdout log
# ready = "started"                 # started | notify (waits for READY=1) | check (first pass)
# start_timeout = "90s"             # READY=1 or a passing check must come within this
# watchdog = "0s"                   # restarted when no WATCHDOG=1 comes for this long (0: off)
# report_signal = "USR2"            # a hung program is asked for a report first ("none": skip)
# report_wait = "50ms"              # time given to write it
# check.url = "http://127.0.0.1:8080/health"   # or "tcp://HOST:PORT"; or check.exec = [argv]
# check.interval = "10s"            # time between two checks
# check.timeout = "5s"              # a check that takes longer fails
# check.grace = "0s"                # no checks this long after a start
# check.failures = 3                # failures in a row that restart the program
# check.status = "200-399"          # HTTP statuses that pass
# check.body = "ok"                 # text the HTTP body must contain (default: any)
# check.insecure = false            # https without certificate checks
# singleton = false                 # with [cluster]: runs on one host only, the holder of
#                                   #   its cluster lock; the others stand by to take over
# lease = "5s"                      # a singleton's lock lease: the longest it stays with a
#                                   #   host that went silent (crashed, cut off, frozen)
# failover_on = []                  # ["fatal"]: a singleton that turns fatal here moves on

# A cluster (`heartline hosts`, `heartline place`): every host runs its daemon with the same
# section; the hosts that report are the cluster. Remove the "#> " to switch it on.
#> [cluster]
#> backend = "heartline://127.0.0.1:7717"   # lockd (heartlines:// with TLS), or etcd://H:P,H:P
#> token_file = "/etc/heartline/lockd.token" # lockd client token (needed beyond loopback)
#> ca_file = "/etc/heartline/ca.pem"       # CA bundle for heartlines:// or etcds://
#> cert_file = "/etc/heartline/client.pem"  # etcds:// client certificate (--client-cert-auth)
#> key_file = "/etc/heartline/client.key"   # its private key (mode 600)
#> name = "web1"                            # this host's name (default: its hostname)
#> report_interval = "2s"                   # load report period; unresponsive after 2 of them
#> ssh_config = "~/.ssh/config"             # an `ssh -F` file (default: ssh's own lookup)
#> ssh_options = ["ConnectTimeout=5"]       # extra `ssh -o` options; they win over heartline's
#> groups.web = ["web1", "web2"]            # host groups for `place --group`
#> hosts.web1.address = "10.0.0.11"         # where ssh reaches it (default: its name)
#> hosts.web1.labels = ["ssd"]              # for `place --label`
#> hosts.web1.cpus = 8                      # declared capacity: never place more than this...
#> hosts.web1.mem = "32GiB"                 # ...or this on it
"""
