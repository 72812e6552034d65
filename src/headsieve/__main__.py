import sys

from headsieve.cli import main

sys.exit(main())
