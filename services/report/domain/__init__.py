"""Pure report logic: rendering (`render`) and the offline question answerer (`answer`)."""
