"""User simulators and answerers for the conversation loop."""
