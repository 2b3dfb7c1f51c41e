"""The hostile-input suite (issue 8): every attack of ``attacks.ATTACKS`` on the door it targets."""
