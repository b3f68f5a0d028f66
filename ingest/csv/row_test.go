package csv

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/promotion-service/promo/promotion"
)

var updateFixtures = flag.Bool("update", false, "rewrite the fixtures in testdata/ from the tables in the tests")

// Parts of a good row, for building bad ones.
const (
	tID    = "d018ef0b-dbd9-48f1-ac1a-eb4d90e57118"
	tPrice = "60.683466"
	tDate  = "2018-08-04 05:32:31 +0200 CEST"
)

// badRow is a malformed row, the field blamed for it and a substring of the
// reason.
type badRow struct {
	name   string
	row    string
	field  string
	reason string
	// file says where the row may go in testdata/bad_rows.csv: an
	// unterminated quote swallows every row after it, so at most one such
	// row goes last, and the others are left out.
	file filePlace
}

type filePlace int

const (
	inFile filePlace = iota
	fileLast
	notInFile
)

var badRows = []badRow{
	// The row as a whole.
	{name: "one field", row: tID, field: FieldRow, reason: "found 1"},
	{name: "two fields", row: tID + "," + tPrice, field: FieldRow, reason: "found 2"},
	{name: "four fields", row: tID + "," + tPrice + "," + tDate + ",x", field: FieldRow, reason: "found 4"},
	{name: "trailing comma", row: tID + "," + tPrice + "," + tDate + ",", field: FieldRow, reason: "found 4"},
	{name: "only commas", row: ",,,,,", field: FieldRow, reason: "found 6"},
	{name: "semicolons", row: tID + ";" + tPrice + ";" + tDate, field: FieldRow, reason: "found 1"},
	{name: "empty quoted field alone", row: `""`, field: FieldRow, reason: "found 1"},
	{name: "quoted too many", row: `"a","b","c","d"`, field: FieldRow, reason: "found 4"},

	// Quoting.
	{name: "unterminated quote", row: `"` + tID + "," + tPrice + "," + tDate, field: FieldRow, reason: "unterminated quoted field", file: fileLast},
	{name: "unterminated quote in last field", row: tID + "," + tPrice + `,"` + tDate, field: FieldRow, reason: "unterminated quoted field", file: notInFile},
	{name: "quote inside unquoted field", row: tID + `,6"0.1,` + tDate, field: FieldRow, reason: "inside an unquoted field"},
	{name: "quote at end of unquoted field", row: tID + `,60.1",` + tDate, field: FieldRow, reason: "inside an unquoted field"},
	{name: "text after closing quote", row: `"` + tID + `"x,` + tPrice + "," + tDate, field: FieldRow, reason: "unexpected text after a closing quote"},
	{name: "quoted then unquoted text after space", row: tID + `,"60.1" 2,` + tDate, field: FieldRow, reason: "unexpected text after a closing quote"},
	{name: "escaped quote in id", row: `"` + tID + `""",` + tPrice + "," + tDate, field: FieldID, reason: "not a UUID"},

	// The id.
	{name: "id empty", row: "," + tPrice + "," + tDate, field: FieldID, reason: "empty"},
	{name: "id blank", row: "   ," + tPrice + "," + tDate, field: FieldID, reason: "empty"},
	{name: "id empty quoted", row: `"",` + tPrice + "," + tDate, field: FieldID, reason: "empty"},
	{name: "id short", row: tID[:35] + "," + tPrice + "," + tDate, field: FieldID, reason: "not a UUID"},
	{name: "id long", row: tID + "0," + tPrice + "," + tDate, field: FieldID, reason: "not a UUID"},
	{name: "id bad hex", row: "d018ef0b-dbd9-48f1-ac1a-eb4d90e5711g," + tPrice + "," + tDate, field: FieldID, reason: "not a UUID"},
	{name: "id misplaced dash", row: "d018ef0-bdbd9-48f1-ac1a-eb4d90e57118," + tPrice + "," + tDate, field: FieldID, reason: "not a UUID"},
	{name: "id misplaced last dash", row: "d018ef0b-dbd9-48f1-ac1ae-b4d90e57118," + tPrice + "," + tDate, field: FieldID, reason: "not a UUID"},
	{name: "id no dashes", row: "d018ef0bdbd948f1ac1aeb4d90e57118," + tPrice + "," + tDate, field: FieldID, reason: "not a UUID"},
	{name: "id braces", row: "{" + tID + "}," + tPrice + "," + tDate, field: FieldID, reason: "not a UUID"},
	{name: "id header", row: "id,price,expiration_date", field: FieldID, reason: "not a UUID"},

	// The price.
	{name: "price empty", row: tID + ",," + tDate, field: FieldPrice, reason: "empty"},
	{name: "price blank", row: tID + ",  ," + tDate, field: FieldPrice, reason: "empty"},
	{name: "price negative", row: tID + ",-60.1," + tDate, field: FieldPrice, reason: "negative"},
	{name: "price negative zero", row: tID + ",-0," + tDate, field: FieldPrice, reason: "negative"},
	{name: "price not a number", row: tID + ",abc," + tDate, field: FieldPrice, reason: "not a decimal number"},
	{name: "price exponent", row: tID + ",1e5," + tDate, field: FieldPrice, reason: "not a decimal number"},
	{name: "price exponent upper", row: tID + ",6.01E1," + tDate, field: FieldPrice, reason: "not a decimal number"},
	{name: "price more than 6 decimals", row: tID + ",60.6834661," + tDate, field: FieldPrice, reason: "more than 6 decimal places"},
	{name: "price 7 zero decimals", row: tID + ",1.0000000," + tDate, field: FieldPrice, reason: "more than 6 decimal places"},
	{name: "price too large", row: tID + ",9223372036855," + tDate, field: FieldPrice, reason: "too large"},
	{name: "price just too large", row: tID + ",9223372036854.775808," + tDate, field: FieldPrice, reason: "too large"},
	{name: "price huge", row: tID + ",99999999999999999999999999999999," + tDate, field: FieldPrice, reason: "too large"},
	{name: "price leading plus", row: tID + ",+60.1," + tDate, field: FieldPrice, reason: "not a decimal number"},
	{name: "price leading dot", row: tID + ",.5," + tDate, field: FieldPrice, reason: "not a decimal number"},
	{name: "price trailing dot", row: tID + ",5.," + tDate, field: FieldPrice, reason: "not a decimal number"},
	{name: "price two dots", row: tID + ",1.2.3," + tDate, field: FieldPrice, reason: "not a decimal number"},
	{name: "price hex", row: tID + ",0x10," + tDate, field: FieldPrice, reason: "not a decimal number"},
	{name: "price inner space", row: tID + ",1 000," + tDate, field: FieldPrice, reason: "not a decimal number"},
	{name: "price NaN", row: tID + ",NaN," + tDate, field: FieldPrice, reason: "not a decimal number"},
	{name: "price Inf", row: tID + ",Inf," + tDate, field: FieldPrice, reason: "not a decimal number"},
	{name: "price currency", row: tID + ",$60.10," + tDate, field: FieldPrice, reason: "not a decimal number"},
	{name: "price fullwidth digit", row: tID + ",\uff16\uff10," + tDate, field: FieldPrice, reason: "not a decimal number"},
	{name: "price comma decimal quoted", row: tID + `,"60,1",` + tDate, field: FieldPrice, reason: "not a decimal number"},

	// The expiration date.
	{name: "date empty", row: tID + "," + tPrice + ",", field: FieldExpiration, reason: "empty"},
	{name: "date garbage", row: tID + "," + tPrice + ",tomorrow", field: FieldExpiration, reason: "unrecognized date"},
	{name: "date with commas", row: tID + "," + tPrice + ",this is not a date at all, no", field: FieldRow, reason: "found 4"},
	{name: "date only", row: tID + "," + tPrice + ",2018-08-04", field: FieldExpiration, reason: "unrecognized date"},
	{name: "date no seconds", row: tID + "," + tPrice + ",2018-08-04 05:32 +0200 CEST", field: FieldExpiration, reason: "unrecognized"},
	{name: "date slashes", row: tID + "," + tPrice + ",2018/08/04 05:32:31", field: FieldExpiration, reason: "unrecognized date"},
	{name: "date bad separator", row: tID + "," + tPrice + ",2018-08-04X05:32:31Z", field: FieldExpiration, reason: "unrecognized date"},
	{name: "date letter in year", row: tID + "," + tPrice + ",2O18-08-04 05:32:31 +0200 CEST", field: FieldExpiration, reason: "unrecognized date"},
	{name: "date month 13", row: tID + "," + tPrice + ",2018-13-04 05:32:31 +0200 CEST", field: FieldExpiration, reason: "month out of range"},
	{name: "date month 0", row: tID + "," + tPrice + ",2018-00-04 05:32:31 +0200 CEST", field: FieldExpiration, reason: "month out of range"},
	{name: "date day 32", row: tID + "," + tPrice + ",2018-08-32 05:32:31 +0200 CEST", field: FieldExpiration, reason: "day out of range"},
	{name: "date day 0", row: tID + "," + tPrice + ",2018-08-00 05:32:31 +0200 CEST", field: FieldExpiration, reason: "day out of range"},
	{name: "date April 31", row: tID + "," + tPrice + ",2018-04-31T05:32:31Z", field: FieldExpiration, reason: "day out of range"},
	{name: "date Feb 29 non-leap", row: tID + "," + tPrice + ",2019-02-29 05:32:31 +0200 CEST", field: FieldExpiration, reason: "day out of range"},
	{name: "date Feb 29 1900", row: tID + "," + tPrice + ",1900-02-29 05:32:31", field: FieldExpiration, reason: "day out of range"},
	{name: "date hour 24", row: tID + "," + tPrice + ",2018-08-04 24:00:00 +0200 CEST", field: FieldExpiration, reason: "hour out of range"},
	{name: "date minute 60", row: tID + "," + tPrice + ",2018-08-04 05:60:31 +0200 CEST", field: FieldExpiration, reason: "minute out of range"},
	{name: "date second 60", row: tID + "," + tPrice + ",2018-08-04 05:32:60 +0200 CEST", field: FieldExpiration, reason: "second out of range"},
	{name: "date leap second RFC 3339", row: tID + "," + tPrice + ",2016-12-31T23:59:60Z", field: FieldExpiration, reason: "second out of range"},
	{name: "date offset hours out of range", row: tID + "," + tPrice + ",2018-08-04 05:32:31 +2400 XYZ", field: FieldExpiration, reason: "offset out of range"},
	{name: "date offset minutes out of range", row: tID + "," + tPrice + ",2018-08-04 05:32:31 +0260 XYZ", field: FieldExpiration, reason: "offset out of range"},
	{name: "date RFC 3339 offset out of range", row: tID + "," + tPrice + ",2018-08-04T05:32:31+24:00", field: FieldExpiration, reason: "offset out of range"},
	{name: "date offset not digits", row: tID + "," + tPrice + ",2018-08-04 05:32:31 +02xx CEST", field: FieldExpiration, reason: "unrecognized time zone offset"},
	{name: "date offset without sign", row: tID + "," + tPrice + ",2018-08-04 05:32:31 0200 CEST", field: FieldExpiration, reason: "unrecognized time zone"},
	{name: "date offset too short", row: tID + "," + tPrice + ",2018-08-04 05:32:31 +02", field: FieldExpiration, reason: "unrecognized time zone"},
	{name: "date abbreviation without offset", row: tID + "," + tPrice + ",2018-08-04 05:32:31 UTC", field: FieldExpiration, reason: "unrecognized time zone"},
	{name: "date two spaces before zone", row: tID + "," + tPrice + ",2018-08-04 05:32:31 +0200  CEST", field: FieldExpiration, reason: "unrecognized time zone"},
	{name: "date offset glued to zone", row: tID + "," + tPrice + ",2018-08-04 05:32:31 +0200CEST", field: FieldExpiration, reason: "unrecognized time zone"},
	{name: "date trailing text", row: tID + "," + tPrice + ",2018-08-04 05:32:31 +0200 CEST foo", field: FieldExpiration, reason: "unexpected text after the time zone"},
	{name: "date trailing punctuation", row: tID + "," + tPrice + ",2018-08-04 05:32:31 +0200 CEST;", field: FieldExpiration, reason: "unexpected text after the time zone"},
	{name: "date bare m=", row: tID + "," + tPrice + ",2018-08-04 05:32:31 +0200 CEST m=", field: FieldExpiration, reason: "unexpected text after the time zone"},
	{name: "date m= not a number", row: tID + "," + tPrice + ",2018-08-04 05:32:31 +0200 CEST m=+abc", field: FieldExpiration, reason: "unexpected text after the time zone"},
	{name: "date m= without sign", row: tID + "," + tPrice + ",2018-08-04 05:32:31 +0200 CEST m=0.5", field: FieldExpiration, reason: "unexpected text after the time zone"},
	{name: "date text after m=", row: tID + "," + tPrice + ",2018-08-04 05:32:31 +0200 CEST m=+0.001 extra", field: FieldExpiration, reason: "unexpected text after the time zone"},
	{name: "date m= without zone", row: tID + "," + tPrice + ",2018-08-04 05:32:31 +0200 m=+0.001", field: FieldExpiration, reason: "unexpected text after the time zone"},
	{name: "date RFC 3339 trailing text", row: tID + "," + tPrice + ",2018-08-04T03:32:31Z foo", field: FieldExpiration, reason: "unrecognized time zone"},
	{name: "date RFC 3339 offset without colon", row: tID + "," + tPrice + ",2018-08-04T05:32:31+0200", field: FieldExpiration, reason: "unrecognized time zone"},
	{name: "date RFC 3339 space offset", row: tID + "," + tPrice + ",2018-08-04T05:32:31 +02:00", field: FieldExpiration, reason: "unrecognized time zone"},
	{name: "date naive trailing space inside quotes", row: tID + "," + tPrice + `,"2018-08-04 05:32:31 "`, field: FieldExpiration, reason: "unrecognized time zone"},
	{name: "date empty fraction", row: tID + "," + tPrice + ",2018-08-04 05:32:31. +0200 CEST", field: FieldExpiration, reason: "malformed fraction"},
	{name: "date fraction too long", row: tID + "," + tPrice + ",2018-08-04T05:32:31.1234567891Z", field: FieldExpiration, reason: "malformed fraction"},
	{name: "date year 0000", row: tID + "," + tPrice + ",0000-06-15 12:00:00", field: FieldExpiration, reason: "year out of range"},
	{name: "date year 0000 after offset", row: tID + "," + tPrice + ",0001-01-01 00:30:00 +0100 CET", field: FieldExpiration, reason: "date out of range"},
	{name: "date year 10000 after offset", row: tID + "," + tPrice + ",9999-12-31T23:30:00-01:00", field: FieldExpiration, reason: "date out of range"},
	{name: "date multi-line quoted", row: tID + "," + tPrice + ",\"2018-08-04\n05:32:31\"", field: FieldExpiration, reason: "unrecognized date"},
}

// goodRow is an acceptable row and the record it must give. The expected
// expiration is computed by time.Parse from refLayout and refValue.
type goodRow struct {
	name      string
	row       string
	id        string
	micros    int64
	refLayout string
	refValue  string
}

const (
	layoutGo      = "2006-01-02 15:04:05.999999999 -0700 MST"
	layoutGoNoZ   = "2006-01-02 15:04:05.999999999 -0700"
	layoutGoColon = "2006-01-02 15:04:05 -07:00"
	layoutNaive   = "2006-01-02 15:04:05.999999999"
)

func goodDate(name, date, refLayout, refValue string) goodRow {
	return goodRow{name: name, row: tID + "," + tPrice + "," + date, id: tID, micros: 60683466, refLayout: refLayout, refValue: refValue}
}

var goodRows = []goodRow{
	goodDate("go CEST", "2018-08-04 05:32:31 +0200 CEST", layoutGo, "2018-08-04 05:32:31 +0200 CEST"),
	goodDate("go UTC", "2018-08-04 03:32:31 +0000 UTC", layoutGo, "2018-08-04 03:32:31 +0000 UTC"),
	goodDate("go +03 abbreviation", "2018-08-04 05:32:31 +0300 +03", layoutGo, "2018-08-04 05:32:31 +0300 +03"),
	goodDate("go -03 abbreviation", "2018-08-04 05:32:31 -0300 -03", layoutGo, "2018-08-04 05:32:31 -0300 -03"),
	goodDate("go -0530 abbreviation", "2018-08-04 05:32:31 -0530 -0530", layoutGoNoZ, "2018-08-04 05:32:31 -0530"),
	goodDate("go half hour IST", "2018-08-04 05:32:31 +0530 IST", layoutGo, "2018-08-04 05:32:31 +0530 IST"),
	goodDate("go +0545", "2018-08-04 05:32:31 +0545 +0545", layoutGoNoZ, "2018-08-04 05:32:31 +0545"),
	goodDate("go zone with slash", "2018-08-04 05:32:31 +0200 Europe/Paris", layoutGoNoZ, "2018-08-04 05:32:31 +0200"),
	goodDate("go fraction", "2018-08-04 05:32:31.123456789 +0200 CEST", layoutGo, "2018-08-04 05:32:31.123456789 +0200 CEST"),
	goodDate("go one digit fraction", "2018-08-04 05:32:31.9 +0200 CEST", layoutGo, "2018-08-04 05:32:31.9 +0200 CEST"),
	goodDate("go monotonic", "2018-08-04 05:32:31.046298806 +0000 UTC m=+0.000014202", layoutGo, "2018-08-04 05:32:31.046298806 +0000 UTC"),
	goodDate("go negative monotonic", "2018-08-04 05:32:31 +0200 CEST m=-12.5", layoutGo, "2018-08-04 05:32:31 +0200 CEST"),
	goodDate("go monotonic whole", "2018-08-04 05:32:31 +0200 CEST m=+3", layoutGo, "2018-08-04 05:32:31 +0200 CEST"),
	goodDate("go without abbreviation", "2018-08-04 05:32:31 +0200", layoutGoNoZ, "2018-08-04 05:32:31 +0200"),
	goodDate("go colon offset", "2018-08-04 05:32:31 +02:00", layoutGoColon, "2018-08-04 05:32:31 +02:00"),
	goodDate("go negative colon offset with zone", "2018-08-04 05:32:31 -05:30 XYZ", layoutGoColon, "2018-08-04 05:32:31 -05:30"),
	goodDate("go offset crossing the day", "2018-08-04 01:32:31 +0500 PKT", layoutGo, "2018-08-04 01:32:31 +0500 PKT"),
	goodDate("go offset crossing the year", "2018-12-31 23:32:31 -1000 HST", layoutGo, "2018-12-31 23:32:31 -1000 HST"),
	goodDate("rfc3339 Z", "2018-08-04T03:32:31Z", time.RFC3339, "2018-08-04T03:32:31Z"),
	goodDate("rfc3339 lower z and t", "2018-08-04t03:32:31z", time.RFC3339, "2018-08-04T03:32:31Z"),
	goodDate("rfc3339 plus offset", "2018-08-04T05:32:31+02:00", time.RFC3339, "2018-08-04T05:32:31+02:00"),
	goodDate("rfc3339 minus offset", "2018-08-03T20:02:31-07:30", time.RFC3339, "2018-08-03T20:02:31-07:30"),
	goodDate("rfc3339 fraction", "2018-08-04T03:32:31.999999999Z", time.RFC3339Nano, "2018-08-04T03:32:31.999999999Z"),
	goodDate("rfc3339 fraction offset", "2018-08-04T05:32:31.5+02:00", time.RFC3339Nano, "2018-08-04T05:32:31.5+02:00"),
	goodDate("rfc3339 no offset", "2018-08-04T03:32:31", layoutNaive, "2018-08-04 03:32:31"),
	goodDate("naive", "2018-08-04 03:32:31", layoutNaive, "2018-08-04 03:32:31"),
	goodDate("naive fraction", "2018-08-04 03:32:31.25", layoutNaive, "2018-08-04 03:32:31.25"),
	goodDate("naive before 1970 with fraction", "1969-12-31 23:59:59.5", layoutNaive, "1969-12-31 23:59:59.5"),
	goodDate("leap day", "2024-02-29 12:00:00 +0100 CET", layoutGo, "2024-02-29 12:00:00 +0100 CET"),
	goodDate("leap day 2000", "2000-02-29T00:00:00Z", time.RFC3339, "2000-02-29T00:00:00Z"),
	goodDate("first second", "0001-01-01 00:00:00", layoutNaive, "0001-01-01 00:00:00"),
	goodDate("first second with offset", "0001-01-01 01:00:00 +0100 CET", layoutGo, "0001-01-01 01:00:00 +0100 CET"),
	goodDate("last second", "9999-12-31T23:59:59Z", time.RFC3339, "9999-12-31T23:59:59Z"),
	goodDate("last second with offset", "9999-12-31 22:59:59 -0100 XYZ", layoutGo, "9999-12-31 22:59:59 -0100 XYZ"),
	goodDate("last second with -00:00", "9999-12-31T23:59:59-00:00", time.RFC3339, "9999-12-31T23:59:59Z"),
	goodDate("quoted date", `"2018-08-04 05:32:31 +0200 CEST"`, layoutGo, "2018-08-04 05:32:31 +0200 CEST"),
	{name: "all quoted", row: `"` + tID + `","60.683466","2018-08-04 05:32:31 +0200 CEST"`, id: tID, micros: 60683466, refLayout: layoutGo, refValue: tDate},
	{name: "spaces around quoted fields", row: `  "` + tID + `"  , "60.1"	,  "2018-08-04T03:32:31Z" `, id: tID, micros: 60100000, refLayout: time.RFC3339, refValue: "2018-08-04T03:32:31Z"},
	{name: "spaces around unquoted fields", row: "  " + tID + " ,\t60.1\t, 2018-08-04 05:32:31 +0200 CEST  ", id: tID, micros: 60100000, refLayout: layoutGo, refValue: tDate},
	{name: "upper-case id", row: strings.ToUpper(tID) + ",60.683466," + tDate, id: tID, micros: 60683466, refLayout: layoutGo, refValue: tDate},
	{name: "mixed-case id", row: "D018ef0B-dBd9-48F1-Ac1a-eB4D90e57118,60.683466," + tDate, id: tID, micros: 60683466, refLayout: layoutGo, refValue: tDate},
	{name: "second example", row: "e2649ca5-7e05-4d53-a8ff-919917a4922e,66.640497,2018-08-22 18:34:11 +0200 CEST", id: "e2649ca5-7e05-4d53-a8ff-919917a4922e", micros: 66640497, refLayout: layoutGo, refValue: "2018-08-22 18:34:11 +0200 CEST"},
	{name: "price zero", row: tID + ",0," + tDate, id: tID, micros: 0, refLayout: layoutGo, refValue: tDate},
	{name: "price zero point zero", row: tID + ",0.0," + tDate, id: tID, micros: 0, refLayout: layoutGo, refValue: tDate},
	{name: "price whole", row: tID + ",60," + tDate, id: tID, micros: 60000000, refLayout: layoutGo, refValue: tDate},
	{name: "price one micro", row: tID + ",0.000001," + tDate, id: tID, micros: 1, refLayout: layoutGo, refValue: tDate},
	{name: "price leading zeros", row: tID + ",000060.100000," + tDate, id: tID, micros: 60100000, refLayout: layoutGo, refValue: tDate},
	{name: "price many leading zeros", row: tID + ",00000000000000000000000000060.1," + tDate, id: tID, micros: 60100000, refLayout: layoutGo, refValue: tDate},
	{name: "price max", row: tID + ",9223372036854.775807," + tDate, id: tID, micros: promotion.MaxPriceMicros, refLayout: layoutGo, refValue: tDate},
	{name: "price max whole", row: tID + ",9223372036854," + tDate, id: tID, micros: 9223372036854000000, refLayout: layoutGo, refValue: tDate},
}

func (g goodRow) want(t testing.TB) promotion.Record {
	t.Helper()
	id, err := promotion.ParseID([]byte(g.id))
	if err != nil {
		t.Fatalf("%s: bad expected id: %v", g.name, err)
	}
	tm, err := time.Parse(g.refLayout, g.refValue)
	if err != nil {
		t.Fatalf("%s: reference time.Parse: %v", g.name, err)
	}
	return promotion.Record{ID: id, PriceMicros: g.micros, Expires: tm.Unix()}
}

func TestParseRowRejects(t *testing.T) {
	for _, c := range badRows {
		t.Run(c.name, func(t *testing.T) {
			r, err := ParseRow([]byte(c.row))
			var re *RowError
			if !errors.As(err, &re) {
				t.Fatalf("ParseRow(%q) = %+v, %v; want a *RowError", c.row, r, err)
			}
			if re.Field != c.field || !strings.Contains(re.Reason, c.reason) {
				t.Fatalf("ParseRow(%q): field %q reason %q; want field %q reason containing %q", c.row, re.Field, re.Reason, c.field, c.reason)
			}
			if re.Line != 0 {
				t.Fatalf("ParseRow line %d, want 0", re.Line)
			}
			if len(re.Value) > 64 {
				t.Fatalf("Value is %d bytes, more than 64", len(re.Value))
			}
			if !strings.Contains(re.Error(), c.field+": "+re.Reason) {
				t.Fatalf("Error() = %q", re.Error())
			}
		})
	}
}

func TestParseRowAccepts(t *testing.T) {
	for _, c := range goodRows {
		t.Run(c.name, func(t *testing.T) {
			want := c.want(t)
			got, err := ParseRow([]byte(c.row))
			if err != nil {
				t.Fatalf("ParseRow(%q): %v", c.row, err)
			}
			if got != want {
				t.Fatalf("ParseRow(%q)\n got %+v (%s)\nwant %+v (%s)", c.row, got,
					time.Unix(got.Expires, 0).UTC(), want, time.Unix(want.Expires, 0).UTC())
			}
		})
	}
}

func TestParseRowBlank(t *testing.T) {
	for _, row := range []string{"", " ", "\t", "  \t  "} {
		_, err := ParseRow([]byte(row))
		var re *RowError
		if !errors.As(err, &re) || re.Field != FieldRow || re.Reason != "blank" {
			t.Fatalf("ParseRow(%q) = %v, want a blank row error", row, err)
		}
	}
}

func TestRowErrorValue(t *testing.T) {
	long := strings.Repeat("x", 100)
	_, err := ParseRow([]byte(tID + "," + long + "," + tDate))
	var re *RowError
	if !errors.As(err, &re) || re.Field != FieldPrice || re.Value != long[:64] {
		t.Fatalf("ParseRow with a long price: %#v", err)
	}
	// The value is cut at a rune boundary.
	euros := strings.Repeat("€", 30) // 90 bytes
	_, err = ParseRow([]byte(tID + "," + euros + "," + tDate))
	if !errors.As(err, &re) || re.Value != strings.Repeat("€", 21) {
		t.Fatalf("ParseRow with a long non-ASCII price: %#v", err)
	}
	want := `line 0: price: not a decimal number ("` + long[:64] + `")`
	if _, err = ParseRow([]byte(tID + "," + long + "," + tDate)); err.Error() != want {
		t.Fatalf("Error() = %q, want %q", err.Error(), want)
	}
}

func TestSplitQuoted(t *testing.T) {
	f := func(rec string, want ...string) {
		t.Helper()
		var p rowParser
		// Dirty the scratch space first: the parser is reused row after row.
		p.split([]byte(`"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","yyyyyyyyy",zzz`))
		n, field, reason := p.split([]byte(rec))
		if reason != "" {
			t.Fatalf("split(%q): %s: %s", rec, field, reason)
		}
		if n != len(want) {
			t.Fatalf("split(%q) = %d fields, want %d", rec, n, len(want))
		}
		for i := range min(n, 3) {
			if string(p.fields[i]) != want[i] {
				t.Fatalf("split(%q) field %d = %q, want %q", rec, i, p.fields[i], want[i])
			}
		}
	}
	f(`a,b,c`, "a", "b", "c")
	f(`"a""b",c,"d"`, `a"b`, "c", "d")
	f(`"""",""""""," "" "`, `"`, `""`, ` " `)
	f(` "a" , "b,c" ,"d`+"\n"+`e"`, "a", "b,c", "d\ne")
	f(`"",,""`, "", "", "")
	f(`x,"y",z,"w"`, "x", "y", "z", "w")
	f(` a b ,"c",	d	`, "a b", "c", "d")
}

// TestParseRowReuse checks that a parser reused across rows, as parseChunk
// does, gives what a fresh one gives.
func TestParseRowReuse(t *testing.T) {
	var rows []string
	for _, c := range badRows {
		rows = append(rows, c.row)
	}
	for _, c := range goodRows {
		rows = append(rows, c.row)
	}
	var p rowParser
	for round := range 2 {
		for _, row := range rows {
			var got promotion.Record
			field, reason, value, blank := p.parse([]byte(row), &got)
			want, err := ParseRow([]byte(row))
			var re *RowError
			switch {
			case errors.As(err, &re) && re.Reason == "blank":
				if !blank {
					t.Fatalf("round %d: %q: reused parser not blank", round, row)
				}
			case err != nil:
				if field != re.Field || reason != re.Reason || string(value) != re.Value {
					t.Fatalf("round %d: %q: reused parser %s %s %q, fresh %v", round, row, field, reason, value, err)
				}
			default:
				if reason != "" || got != want {
					t.Fatalf("round %d: %q: reused parser %+v %s, fresh %+v", round, row, got, reason, want)
				}
			}
		}
	}
}

func TestParseRowDoesNotAllocate(t *testing.T) {
	rows := [][]byte{
		[]byte(tID + "," + tPrice + "," + tDate),
		[]byte(`"` + tID + `","60.1","2018-08-04T03:32:31Z"`),
		[]byte(tID + ",abc," + tDate),
		[]byte(tID + "," + tPrice + ",2018-08-04 05:32:31.5 +0200 CEST m=+0.001"),
	}
	var p rowParser
	var r promotion.Record
	for _, row := range rows {
		p.parse(row, &r) // grow the scratch space
	}
	allocs := testing.AllocsPerRun(1000, func() {
		for _, row := range rows {
			p.parse(row, &r)
		}
	})
	if allocs != 0 {
		t.Fatalf("rowParser.parse allocated %v times per run", allocs)
	}
}

// fixtureCSV renders the tables as the fixture files kept in testdata.
func fixtureCSV() (bad, good []byte) {
	var b, g bytes.Buffer
	var last []string
	for _, c := range badRows {
		switch c.file {
		case inFile:
			b.WriteString(c.row + "\n")
		case fileLast:
			last = append(last, c.row)
		}
	}
	for _, row := range last {
		b.WriteString(row + "\n")
	}
	for _, c := range goodRows {
		g.WriteString(c.row + "\n")
	}
	return b.Bytes(), g.Bytes()
}

// TestRowFixtures keeps testdata/bad_rows.csv and testdata/good_rows.csv in
// step with the tables (go test -run TestRowFixtures -update rewrites them),
// and checks that the whole-file parser reports every bad row on its line
// with the table's field and reason, and accepts every good row.
func TestRowFixtures(t *testing.T) {
	bad, good := fixtureCSV()
	for name, want := range map[string][]byte{"bad_rows.csv": bad, "good_rows.csv": good} {
		path := filepath.Join("testdata", name)
		if *updateFixtures {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s is out of date: run go test -run TestRowFixtures -update ./ingest/csv", path)
		}
	}

	// Expected line of each bad row in the file.
	type wantErr struct {
		line          int64
		field, reason string
	}
	var wants, tail []wantErr
	line := int64(1)
	var lastRows []badRow
	for _, c := range badRows {
		switch c.file {
		case inFile:
			wants = append(wants, wantErr{line, c.field, c.reason})
			line += int64(strings.Count(c.row, "\n")) + 1
		case fileLast:
			lastRows = append(lastRows, c)
		}
	}
	for _, c := range lastRows {
		tail = append(tail, wantErr{line, c.field, c.reason})
		line += int64(strings.Count(c.row, "\n")) + 1
	}
	wants = append(wants, tail...)

	for _, workers := range []int{1, 4} {
		res := runParse(t, bytes.NewReader(bad), Config{Workers: workers, ChunkSize: 512, MaxRejected: 1 << 20, MaxErrors: 1 << 20})
		if res.err != nil {
			t.Fatalf("parse bad_rows.csv: %v", res.err)
		}
		if len(res.rows) != 0 {
			t.Fatalf("parse bad_rows.csv accepted %d rows: %v", len(res.rows), res.rows)
		}
		if len(res.errs) != len(wants) || res.rejected != int64(len(wants)) {
			t.Fatalf("parse bad_rows.csv: %d errors kept, %d rejected; want %d", len(res.errs), res.rejected, len(wants))
		}
		for i, w := range wants {
			e := res.errs[i]
			if e.Line != w.line || e.Field != w.field || !strings.Contains(e.Reason, w.reason) {
				t.Fatalf("bad_rows.csv error %d = %+v, want line %d field %s reason ~%q", i, e, w.line, w.field, w.reason)
			}
		}

		res = runParse(t, bytes.NewReader(good), Config{Workers: workers, ChunkSize: 512, MaxErrors: 10})
		if res.err != nil || len(res.errs) != 0 {
			t.Fatalf("parse good_rows.csv: %v %v", res.err, res.errs)
		}
		if len(res.rows) != len(goodRows) {
			t.Fatalf("parse good_rows.csv: %d rows, want %d", len(res.rows), len(goodRows))
		}
		for i, c := range goodRows {
			if got, want := res.rows[int64(i+1)], c.want(t); got != want {
				t.Fatalf("good_rows.csv line %d (%s) = %+v, want %+v", i+1, c.name, got, want)
			}
		}
	}
}

// formatRecord writes r in the plainest input form.
func formatRecord(r *promotion.Record) []byte {
	b := r.ID.AppendText(nil)
	b = append(b, ',')
	b = promotion.AppendPrice6(b, r.PriceMicros)
	b = append(b, ',')
	return promotion.AppendRFC3339(b, r.Expires)
}

func FuzzParseRow(f *testing.F) {
	for _, name := range []string{"bad_rows.csv", "good_rows.csv"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		for line := range bytes.Lines(data) {
			f.Add(bytes.TrimSuffix(line, []byte("\n")))
		}
	}
	for _, c := range badRows {
		f.Add([]byte(c.row))
	}
	var dirty rowParser
	f.Fuzz(func(t *testing.T, row []byte) {
		r, err := ParseRow(row)
		if err != nil {
			var re *RowError
			if !errors.As(err, &re) {
				t.Fatalf("ParseRow(%q) error %T is not a *RowError", row, err)
			}
			switch re.Field {
			case FieldRow, FieldID, FieldPrice, FieldExpiration:
			default:
				t.Fatalf("ParseRow(%q): unknown field %q", row, re.Field)
			}
			if re.Reason == "" || len(re.Value) > 64 {
				t.Fatalf("ParseRow(%q): bad error %#v", row, re)
			}
		} else {
			if r.PriceMicros < 0 || r.Expires < promotion.MinExpires || r.Expires > promotion.MaxExpires {
				t.Fatalf("ParseRow(%q) accepted out-of-range %+v", row, r)
			}
			again := formatRecord(&r)
			r2, err := ParseRow(again)
			if err != nil {
				t.Fatalf("ParseRow(%q) = %+v, but its plain form %q fails: %v", row, r, again, err)
			}
			if r2 != r {
				t.Fatalf("ParseRow(%q) = %+v, but its plain form %q gives %+v", row, r, again, r2)
			}
		}
		// A parser with state left over from other rows agrees.
		var r3 promotion.Record
		dirty.parse([]byte(`"`+tID+`","1.5",2018-08-04T03:32:31Z`), &r3)
		r3 = promotion.Record{}
		field, reason, _, blank := dirty.parse(row, &r3)
		var re *RowError
		switch {
		case errors.As(err, &re) && re.Reason == "blank":
			if !blank {
				t.Fatalf("%q: reused parser does not see a blank row", row)
			}
		case err != nil:
			if field != re.Field || reason != re.Reason {
				t.Fatalf("%q: reused parser %s %s; fresh %v", row, field, reason, err)
			}
		default:
			if reason != "" || r3 != r {
				t.Fatalf("%q: reused parser %+v %s; fresh %+v", row, r3, reason, r)
			}
		}
	})
}

func BenchmarkParseRow(b *testing.B) {
	row := []byte(tID + "," + tPrice + "," + tDate)
	var p rowParser
	var r promotion.Record
	b.ReportAllocs()
	b.SetBytes(int64(len(row) + 1))
	for b.Loop() {
		if _, reason, _, _ := p.parse(row, &r); reason != "" {
			b.Fatal(reason)
		}
	}
}
