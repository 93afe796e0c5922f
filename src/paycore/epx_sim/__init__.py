"""The EPX simulator: a separate process speaking EPX's wire protocol, with fault injection.

It imports nothing from paycore's capabilities: paycore reaches it only through configuration.
"""
