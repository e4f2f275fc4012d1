from uvd_pipeline import startup_gc

startup_gc.pause()  # before the command's imports (`startup_gc`)

from uvd_pipeline.cli import run  # noqa: E402

run()
