package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/promotion-service/promo/ring"
)

func runRing(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "assign" {
		fmt.Fprintln(stderr, "Usage: promo ring assign --nodes a,b,c --replicas R [--slots S] [--previous FILE]")
		return errUsage
	}
	fs := newFlagSet("ring assign", "promo ring assign --nodes a,b,c --replicas R [--previous FILE]", stderr)
	nodes := fs.String("nodes", "", "node names, comma-separated (name=url entries work too)")
	replicas := fs.Int("replicas", 2, "replicas per slot")
	slots := fs.Int("slots", ring.DefaultSlots, "number of slots")
	previous := fs.String("previous", "", "an earlier output of this command: move as few slots as balance allows")
	rest, err := parseFlags(fs, args[1:])
	if err != nil {
		return err
	}
	if err := noArgs(fs, rest); err != nil {
		return err
	}
	members, err := ring.ParseNodes(*nodes, false)
	if err != nil {
		return err
	}
	var prev *ring.Assignment
	if *previous != "" {
		b, err := os.ReadFile(*previous)
		if err != nil {
			return err
		}
		var j ring.JSON
		if err := json.Unmarshal(b, &j); err != nil {
			return fmt.Errorf("%s: %w", *previous, err)
		}
		if prev, err = ring.FromJSON(j); err != nil {
			return fmt.Errorf("%s: %w", *previous, err)
		}
	}
	a, err := ring.Assign(ring.Names(members), *replicas, *slots, prev)
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(a.ToJSON())
}
