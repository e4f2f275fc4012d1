"""The config of a pseudo-labeler (`labeler:` of a stereo or pseudo_labeled source): its `name`
picks the model, whose parameters are checked with the rest of the config before the build
starts. `uvd_pipeline.labelers` runs them."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import Field, StrictFloat, StrictInt, field_validator, model_serializer

from uvd_pipeline.config_base import Strict


class LabelerParams(Strict):
    """A labeler spec: its `name` and parameters, each checked before the build starts (a bad
    value would otherwise fail every pair of the source inside the workers). Dumped as written (the
    parameters given, not the defaults), as the spec was before its parameters were checked: the
    dump is what the labeler gets and what the build's config hash and lineage hold."""

    @model_serializer(mode="wrap")
    def _as_written(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if k == "name" or k in self.model_fields_set}


class CannyLabeler(LabelerParams):
    name: Literal["canny"]
    sigma: StrictFloat = Field(0.33, ge=0.0, le=1.0, description="Canny's thresholds are (1 - sigma) and "
                               "(1 + sigma) times the image's median grey")


class SgbmLabeler(LabelerParams):
    name: Literal["sgbm"]
    num_disparities: StrictInt = Field(64, ge=1, le=1024, description="disparity search range in pixels (rounded up "
                                       "to a multiple of 16, at most half the image width)")
    block_size: StrictInt = Field(5, ge=1, le=51, description="side of the matched blocks, odd")

    @field_validator("block_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"must be odd (OpenCV's StereoSGBM matches blocks around a centre pixel), got {value}")
        return value


class MmposeLabeler(LabelerParams):
    name: Literal["mmpose"]
    config: str | None = Field(None, min_length=1, description="the model's MMPose config file (a local path)")
    checkpoint: str | None = Field(None, min_length=1, description="the model's weights (a local path)")
    device: str = Field("cpu", description="cpu, cuda or cuda:N")
    score_threshold: StrictFloat = Field(0.3, ge=0.0, le=1.0, description="keypoints scored at or below it are "
                                         "not drawn")

    @field_validator("device")
    @classmethod
    def _torch_device(cls, value: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", value):
            raise ValueError(f"expects cpu, cuda or cuda:N, got {value!r}")
        return value


LABELER_MODELS: dict[str, type[LabelerParams]] = {"canny": CannyLabeler, "sgbm": SgbmLabeler, "mmpose": MmposeLabeler}
LabelerSpec = Annotated[Union[tuple(LABELER_MODELS.values())], Field(discriminator="name")]  # type: ignore[valid-type]
