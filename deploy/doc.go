// Package deploy holds the Azure deployment (deploy/azure: the ARM
// template, the gateway's and nodes' cloud-init and configure scripts),
// the systemd unit and the container image's state folder, and the tests
// that check them without Azure: every template resource against the ARM
// schemas (strictly), the template evaluated for each parameter
// combination, the cloud-init files against cloud-init's schema, and the
// scripts run against stand-ins. What cannot be checked here is listed in
// deploy/README.md.
//
// It has no code of its own besides its tests.
package deploy
