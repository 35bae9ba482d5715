"""What the tests share: servers they start, backends they talk to, waits on observable state."""
