"""RelayGuard: close cPanel POP-before-SMTP relaying across a fleet, prove it, and keep it closed."""

__version__ = "0.1.0"
