from uvd_pipeline.cli import run

run()
