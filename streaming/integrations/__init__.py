"""Framework integrations (optional extras): `streaming.integrations.langgraph` needs
`runcast[langgraph]`. Nothing else in runcast imports them."""
