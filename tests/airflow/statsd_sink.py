"""A StatsD listener for the test deployment: every metric line Airflow sends, appended to a file.

tests/airflow/airflow.sh starts it with the other components and points Airflow's [metrics] at it,
so a deployment test can read what a real task emitted through Airflow's Stats. A datagram may
carry several metrics, one a line; each is written as its own line, flushed at once, so a reader
sees it as soon as it arrived. Nothing is aggregated: the file is the wire, in order.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from pathlib import Path
from types import FrameType

# The largest UDP payload; StatsD clients send far less.
MAX_DATAGRAM = 65535


def main() -> None:
    """Listen on 127.0.0.1:PORT and append each received metric line to OUTPUT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()

    def stop(signum: int, frame: FrameType | None) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", args.port))
        with args.output.open("a", encoding="utf-8") as out:
            while True:
                datagram, _ = sock.recvfrom(MAX_DATAGRAM)
                text = datagram.decode("utf-8", "replace")
                for line in text.splitlines():
                    if line.strip():
                        out.write(line + "\n")
                out.flush()


if __name__ == "__main__":
    main()
