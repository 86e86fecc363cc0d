"""Policies: the tiny embedded model and SD3 / SD3.5 behind one interface (`Policy`), built from the
`model` params section by one factory (`elborl.models.factory`)."""
