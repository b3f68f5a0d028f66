// Package readnode serves GET /promotions/{id} from a versioned local
// store. Standalone mode uses it over the store its imports write; cluster
// read nodes use it over the shard they pull.
//
// The lookup path allocates nothing per request: the ID is parsed in
// place, the store copies the value out before releasing Pebble's buffer,
// and the JSON body is appended by hand. Every answer carries
// X-Dataset-Version, and one request reads exactly one version.
package readnode
