"""`python -m serving`: see serving/start.py."""

import sys

from serving.start import main

sys.exit(main())
