"""Learner and actor processes (`expoft learner`, `expoft actor`): the online loop of a run cut
in two over a websocket, so that a robot computer acts while another machine learns."""
