"""Annotated video: frames with per-frame masks (VIPSeg layout) or poses (JHMDB layout).

A sentence holds `frames` frames and their annotations (16 images for 8 frames), laid out
interleaved {f1, a1, f2, a2, ...} or separated {f1, f2, ..., a1, a2, ...}. Windows at one stride
do not overlap; a video with fewer frames than a window is rejected, never padded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np

from sources import fsio
from sources.paths import OutsideRoot, check_inside, path_problem
from sources.records import AnnotatedClipRecord, Reject, SourceItem, safe_key

VideoLayout = Literal["vipseg", "jhmdb"]
SentenceLayout = Literal["interleaved", "separated"]
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


def frame_windows(n_frames: int, frames: int, stride: int) -> list[tuple[int, ...]]:
    """Non-overlapping windows of `frames` indices `stride` apart."""
    span = (frames - 1) * stride + 1
    return [tuple(range(start, start + span, stride)) for start in range(0, n_frames - span + 1, span)]


# JHMDB's joint_positions.mat holds a few (2, 15, T) arrays: kilobytes. The cap also bounds what
# a compressed MAT element can inflate to (zlib expands at most about 1000-fold)
MAX_JOINTS_BYTES = 1 << 18
MATLAB_OFFSET = 0.5  # JHMDB's pos_img is in MATLAB's 1-based pixel-centre coordinates


def load_jhmdb_points(data: bytes) -> np.ndarray:
    """joint_positions.mat -> (T, 15, 2) pixel-edge coordinates from its `pos_img` (2, 15, T)."""
    from scipy.io import loadmat

    pos = np.asarray(loadmat(io.BytesIO(data))["pos_img"], dtype=np.float64)
    if pos.ndim != 3 or pos.shape[0] != 2 or pos.shape[1] != 15:
        raise ValueError(f"pos_img must be (2, 15, T), got {pos.shape}")
    return pos.transpose(2, 1, 0) - MATLAB_OFFSET


@dataclass(frozen=True)
class AnnotatedVideoSource:
    name: str
    path: str
    layout: VideoLayout = "vipseg"
    sentence_layout: SentenceLayout = "interleaved"
    frames: int = 8
    stride: int = 1
    follow_links: bool = False  # read frames and annotations that are links leading out of `path`

    def units(self) -> list[str]:
        if self.layout == "vipseg":
            videos = fsio.list_dirs(fsio.join(self.path, "imgs"), links=True) if fsio.exists(fsio.join(self.path, "imgs")) else []
        else:
            root = fsio.join(self.path, "Rename_Images")
            videos = [v for action in (fsio.list_dirs(root, links=True) if fsio.exists(root) else [])
                      for v in fsio.list_dirs(action, links=True)]
        if not videos:
            raise FileNotFoundError(f"no videos in the {self.layout} layout under {self.path}")
        return videos

    def read(self, video_dir: str) -> Iterator[SourceItem]:
        if self.layout == "vipseg":
            video = fsio.basename(video_dir)
        else:
            video = f"{fsio.basename(video_dir.rsplit('/', 1)[0])}/{fsio.basename(video_dir)}"
        group = safe_key(self.name, *video.split("/"))
        outside = path_problem(self.path, video_dir, self.follow_links)
        if outside:  # not listed: the linked video folder is one rejected item
            yield Reject(group, self.name, group, "read", outside.reason, outside.detail)
            return
        frames = fsio.list_files(video_dir, FRAME_SUFFIXES, links=True)
        windows = frame_windows(len(frames), self.frames, self.stride)
        if not windows:
            yield Reject(group, self.name, group, "plan", "too_few_frames", f"{len(frames)} frames < {self.frames}")
            return
        try:
            annotations = self._annotations(video, frames)
        except OutsideRoot as exc:
            yield Reject(group, self.name, group, "read", exc.reason, exc.detail)
            return
        except FileNotFoundError as exc:
            yield Reject(group, self.name, group, "read", "missing_annotation", str(exc)[:200])
            return
        except (OSError, ValueError, KeyError, NotImplementedError, TypeError) as exc:
            # scipy's messages can quote the file's header bytes: name the problem only
            yield Reject(group, self.name, group, "read", "bad_annotation", f"joint_positions.mat: {type(exc).__name__}")
            return
        for window in windows:
            key = f"{group}-s{self.stride}-f{window[0]:05d}"
            used = [frames[i] for i in window]
            if self.layout == "vipseg":
                used += [u for u in (annotations[i] for i in window) if u is not None]
            outside = next(filter(None, (path_problem(self.path, u, self.follow_links) for u in used)), None)
            if outside:
                yield Reject(key, self.name, group, "read", outside.reason, outside.detail)
                continue
            if self.layout == "vipseg":
                uris = [annotations[i] for i in window]
                if any(u is None for u in uris):
                    lost = [fsio.basename(frames[i]) for i, u in zip(window, uris) if u is None]
                    yield Reject(key, self.name, group, "read", "missing_annotation", f"no mask for {', '.join(lost)}")
                    continue
                annotation = {"kind": "mask", "uris": uris}
            else:
                points = annotations
                if window[-1] >= len(points):
                    yield Reject(key, self.name, group, "read", "missing_annotation",
                                 f"joint_positions covers {len(points)} frames")
                    continue
                annotation = {"kind": "pose", "skeleton": "jhmdb15",
                              "points": [[v for x, y in points[i] for v in (float(x), float(y), 2.0)] for i in window]}
            yield AnnotatedClipRecord(
                key=key, source=self.name, group=group, frame_uris=tuple(frames[i] for i in window),
                annotation=annotation, layout=self.sentence_layout, stride=self.stride, start=window[0],
                lineage={"video": video, "frames_total": len(frames), "frames": list(window)},
            )

    def _annotations(self, video: str, frames: list[str]):
        if self.layout == "vipseg":
            masks_dir = fsio.join(self.path, "panomasks", video)
            masks = {fsio.basename(m).rsplit(".", 1)[0]: m for m in fsio.list_files(masks_dir, (".png",), links=True)} \
                if fsio.exists(masks_dir) else {}
            return [masks.get(fsio.basename(f).rsplit(".", 1)[0]) for f in frames]
        mat = fsio.join(self.path, "joint_positions", video, "joint_positions.mat")
        if not fsio.exists(mat):
            raise FileNotFoundError(f"no joint_positions.mat for {video}")
        check_inside(self.path, mat, self.follow_links)
        return load_jhmdb_points(fsio.read_bytes(mat, MAX_JOINTS_BYTES))
