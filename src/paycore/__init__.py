"""paycore — a multi-tenant payment service for the EPX (North) gateway."""

__version__ = "0.1.0"
