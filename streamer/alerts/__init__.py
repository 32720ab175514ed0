"""Alert rules (pure), their delivery (threads, HTTP, subprocess) and the monitor that observes hops."""
