import sys

from uvd_pipeline.cli import main

sys.exit(main())
