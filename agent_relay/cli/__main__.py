"""``python -m agent_relay.cli``: the same as the ``agent-relay`` command."""

from . import main

raise SystemExit(main())
