"""Video: reading a 3000-frame 320x240 clip's sentences as a build does, against decoding it all.

Ours: what the build runs for one video: the probe (`VideoSource.read`: presented-frame index,
first and last frame checked) and then every planned clip of every stride from one decoding
job (`clip_frames`), both in the budget worker process, frames returned to this process.
Baselines: one PyAV pass in this process that decodes every frame in order and converts to RGB
only the frames the same plan wants (frame i = the i-th decoded frame):
- "baseline": with PyAV's usual `frame.to_ndarray(format="rgb24")`, which sets up a new scaler
  per frame (it costs more than decoding a 320x240 frame; ours keeps one);
- "tuned baseline" (the one the targets are judged against): the same with one shared
  `VideoReformatter` on one thread, the conversion ours uses (faster than the scaler's automatic
  threads on these small frames), so the speedup is only what decoding less buys.
Both sides decode single-threaded (one core each, as a build gives each video one process; ours
skips frames per packet). For information, the note gives the tuned baseline with PyAV's frame
threading on (`thread_type="AUTO"`); on the shared 2-core machine it has not been faster; and
the decoding job ours runs, timed alone in this process (no probe, no worker process, no
transfer): against the tuned baseline, the most the decoding plan itself can give; and decoding
alone, every frame and every reference frame (frames nothing references skipped in the
decoder), nothing converted: where wanted frames lie late in every GOP (GOP 250 at strides
10-30), the plan must decode nearly every reference frame, so the tuned baseline over that
time is a bound no plan passes on one core.
Same run, same files: H.264 (x264, default B-frames) with a key frame every 30 and every 250
frames, at the paper's strides 10/20/30 and at stride 30 alone. Every frame ours returns must
equal the baselines' pixel for pixel. The rounds are interleaved (ours, then each baseline) so
load hits them alike; times are medians over `BENCH_REPEATS` rounds, the speedup is the median
of the rounds' own ratios, and the note gives the load average around the measurement.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cv2
import numpy as np

from common import OUT_DIR, emit  # noqa: E402

FRAMES, WIDTH, HEIGHT = 3000, 320, 240
TARGETS = {(10, 20, 30): 1.5, (30,): 1.0}  # (30,) at GOP 250; at GOP 30 it is reported against 1.5
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))  # interleaved rounds; medians (the machine is shared)


def source_frames() -> list[np.ndarray]:
    """The bundled real clips at 320x240, looped to 3000 frames (real motion, real detail)."""
    from uvd_pipeline.sample import media

    clips = []
    for name in ("bikes", "carphone", "bigbuckbunny"):
        clips += [cv2.resize(f, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA) for f in media.clip_frames(name, 10_000)]
    return [clips[i % len(clips)] for i in range(FRAMES)]


def encode(path: str, gop: int, frames: list[np.ndarray]) -> str:
    import av

    if os.path.exists(path):
        return path
    with av.open(path + ".part.mp4", "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"g": str(gop), "threads": "1", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    os.replace(path + ".part.mp4", path)
    return path


def ours(path: str, strides: tuple[int, ...]) -> dict[int, np.ndarray]:
    from sources.records import VideoRecord
    from sources.video import VideoSource, clip_frames

    (record,) = list(VideoSource("bench", os.path.dirname(path), strides=strides).read(path))
    assert isinstance(record, VideoRecord), record
    frames: dict[int, np.ndarray] = {}
    for clip, pixels in clip_frames(record):
        assert not isinstance(pixels, Exception), pixels
        frames.update(zip(clip.frame_indices, pixels))
    return frames


def job_alone(path: str, wanted: set[int]) -> dict[int, np.ndarray]:
    """The decoding job ours runs, alone in this process: no probe, no worker, no transfer."""
    from sources.video_decode import decode_frames

    return dict(decode_frames(path, sorted(wanted), FRAMES))


def baseline(path: str, wanted: set[int], tuned: bool = False, threads: str = "NONE") -> dict[int, np.ndarray]:
    import av
    from av.video.reformatter import VideoReformatter

    frames = {}
    reformatter = VideoReformatter()
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = threads
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                if tuned:
                    frames[i] = reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()
                else:
                    frames[i] = frame.to_ndarray(format="rgb24")
    return frames


def decode_only(path: str, skip_nonref: bool = False) -> int:
    """Every frame decoded in order, none converted (`skip_nonref`: frames no other frame
    references skipped inside the decoder): what decoding alone costs on one core."""
    import av

    decoded = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        if skip_nonref:
            stream.codec_context.skip_frame = "NONREF"
        for _ in container.decode(stream):
            decoded += 1
    return decoded


def rounds(**runs) -> dict[str, tuple[list[float], object]]:
    """Each named run's times over `REPEATS` interleaved rounds, and its last result."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    results: dict[str, object] = {}
    for _ in range(REPEATS):
        for name, fn in runs.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (times[name], results[name]) for name in runs}


def main() -> None:
    from sources.video import plan_clips

    os.makedirs(OUT_DIR, exist_ok=True)
    frames = source_frames()
    rows = []
    for gop in (30, 250):
        path = encode(os.path.join(OUT_DIR, f"video_3000f_gop{gop}.mp4"), gop, frames)
        for strides in ((10, 20, 30), (30,)):
            wanted = {i for plan in plan_clips(FRAMES, strides) for i in plan.indices}
            ours(path, strides)  # warm-up: the worker process starts, the file is in the page cache
            load = os.getloadavg()[0]
            timed = rounds(ours=lambda: ours(path, strides), job=lambda: job_alone(path, wanted),
                           base=lambda: baseline(path, wanted),
                           tuned=lambda: baseline(path, wanted, tuned=True),
                           threaded=lambda: baseline(path, wanted, tuned=True, threads="AUTO"),
                           decode=lambda: decode_only(path), refs=lambda: decode_only(path, skip_nonref=True))
            load = (load + os.getloadavg()[0]) / 2
            t_ours, got = timed["ours"]
            identical = all(sorted(got) == sorted(ref) and all(np.array_equal(got[i], ref[i]) for i in ref)
                            for ref in (timed[name][1] for name in ("base", "tuned", "threaded")))
            target = TARGETS[strides] if gop == 250 or strides != (30,) else 1.5
            label = "/".join(map(str, strides))
            threaded = statistics.median(timed["threaded"][0])
            ceiling = statistics.median(b / j for b, j in zip(timed["tuned"][0], timed["job"][0]))
            for name, key in (("baseline", "base"), ("tuned baseline", "tuned")):
                speedup = statistics.median(b / o for b, o in zip(timed[key][0], t_ours))
                rows.append({
                    "metric": f"video 3000f 320x240 GOP {gop}, strides {label}: s per clip vs {name}",
                    "ours": round(statistics.median(t_ours), 3), "baseline": round(statistics.median(timed[key][0]), 3),
                    "speedup": round(speedup, 2), "target": f">= {target}x" if key == "tuned" else "reported",
                    "met": speedup >= target and identical if key == "tuned" else "",
                    "note": f"{len(wanted)} frames wanted; identical frames: {identical}; median of {REPEATS} "
                            f"interleaved rounds, load {load:.1f}; the decoding job alone in this process "
                            f"{statistics.median(timed['job'][0]):.3f} s ({ceiling:.2f}x the tuned baseline: the "
                            f"most the plan gives); frame-threaded tuned baseline {threaded:.3f} s; decoding "
                            f"alone every frame {statistics.median(timed['decode'][0]):.3f} s, every reference "
                            f"frame {statistics.median(timed['refs'][0]):.3f} s (a plan with a wanted frame late in "
                            f"every GOP decodes nearly all of these)",
                })
    emit("video", rows)


if __name__ == "__main__":
    main()
