"""The daemon: the only place that wires core and adapters together."""
