import sys

from multinet.cli import main

sys.exit(main())
