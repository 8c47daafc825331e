"""`python -m cxr_utils ...`"""

import sys

from .cli import main

sys.exit(main())
