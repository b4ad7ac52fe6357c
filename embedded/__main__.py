import sys

from embedded.stack import main

sys.exit(main())
