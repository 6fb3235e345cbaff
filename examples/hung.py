"""A demo program that serves for a few seconds, then hangs.

It beats with heartline.service.notify.kick() while it works; when it hangs, the beats stop,
heartline's watchdog asks it for a report (every thread's stack, written to
logs/reports/hung/ by heartline.service.reports) and restarts it.
"""

import time

from heartline.service import notify, reports

reports.install()
notify.ready()
print("hung: serving", flush=True)
busy_until = time.monotonic() + 4
while time.monotonic() < busy_until:
    notify.kick()
    time.sleep(0.2)


def wait_for_the_database() -> None:
    print("hung: waiting for the database, which never answers", flush=True)
    time.sleep(3600)


wait_for_the_database()
