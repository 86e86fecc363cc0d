"""Policies: the tiny embedded model and SD3 / SD3.5 behind one interface (`Policy`)."""
