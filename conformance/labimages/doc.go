// Package labimages holds the two programs of the real-node lab's own
// images, built into images by hack/ociimage -set lab: a pod sandbox
// ("pause") image, since the lab has no registry to pull one from, and a
// test backend that answers with who served the request and whom it saw.
package labimages
