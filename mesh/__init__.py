"""How the services meet: the local stack (layout, parts, supervisor) and, for Kubernetes, the
Istio policies under mesh/istio."""
