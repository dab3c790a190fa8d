"""The scenarios of benches/attacks.py: the client side of the dialects (`wire`), the run around
an attack (`harness`: server, large room, bystander), and one module per attack of issue 20
(`round1` holds issue 10's five)."""
