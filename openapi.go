package chatbatch

import _ "embed" // for OpenAPI

// OpenAPI is the OpenAPI 3.1 description of the Batch Send Messages API
// that package batch's Handler serves (openapi.yaml in the repository,
// YAML): every endpoint, field, header and error code. chatbatchd serves
// it at GET /openapi.yaml, and the end-to-end tests check every answer
// they get against it. Do not modify the slice.
//
//go:embed openapi.yaml
var OpenAPI []byte
