import sys

from vdengine.cli import main

sys.exit(main())
