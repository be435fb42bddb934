import sys

from pipeline.adapters.processes import die_with_parent
from pipeline.cli import main

die_with_parent()  # killing nox (or a CI step) alone must stop the pipeline too, rollouts included
sys.exit(main())
