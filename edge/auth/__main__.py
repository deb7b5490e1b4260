import sys

from edge.auth.cli import main

sys.exit(main())
