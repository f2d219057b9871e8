"""One-line adapters that make tools built by an agent framework durable.

Each submodule imports its framework lazily (none of them is a dependency of agent_relay): importing
``agent_relay.integrations.<framework>`` needs that framework installed; ``agent_relay`` itself never
does.
"""
