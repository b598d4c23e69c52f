"""`python -m serving`: the API's server (`serving.server`)."""

import sys

from serving.server import main

sys.exit(main())
