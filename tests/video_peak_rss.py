"""Run in a child process by tests/test_video_zoo.py: the peak memory that probing and decoding one
video add, each measured alone (`/proc/self/clear_refs` resets the peak; the test starts this with
MALLOC_MMAP_THRESHOLD_ fixed, so a frame buffer freed is given back and one allocated is counted).

argv: the video, its frame count, and a JSON list of keyword arguments (max_pixels, memory_mb) to
`probe` and `decode_frames`. Prints a JSON list of [job, MiB added, frames got, reject reason]."""

import json
import sys

from sources.video_decode import VideoError, decode_frames, probe


def resident(key: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key)) >> 10


def measured(path: str, n: int, job: str, options: dict) -> list:
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # the peak (VmHWM) starts again from what is resident now
    before, got, reason = resident("VmRSS"), [], None
    try:
        if job == "probe":
            got = [probe(path, **options).n_frames]
        else:
            for i, _ in decode_frames(path, range(n), n, **options):
                got.append(i)
    except VideoError as exc:
        reason = exc.reason
    return [job, resident("VmHWM") - before, got, reason]


def main() -> None:
    path, n, runs = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    list(decode_frames(path, range(4), n))  # the libraries loaded first, on small frames
    print(json.dumps([measured(path, n, job, options) for options in runs for job in ("probe", "decode")]))


if __name__ == "__main__":
    main()
