"""The store layer: the contract every conversation store backend passes."""
