package main

import (
	"fmt"
	"html"
	"math"
	"strconv"
	"strings"
)

// bar is one row of a bar chart.
type bar struct {
	Label string
	Value float64
	// Text replaces the bar when there is no value (NaN): "skipped", "n/a".
	Text string
	// Ours draws the bar in the module's colour.
	Ours bool
}

const (
	chartWidth  = 720
	labelWidth  = 150
	valueWidth  = 110
	rowHeight   = 26
	titleHeight = 34
)

// barChart draws horizontal bars, one per row, scaled to the largest
// value, each labelled with its value and unit. It is plain SVG 1.1 that
// browsers and GitHub render without scripts or fonts of its own.
func barChart(title, unit string, bars []bar) string {
	maxV := 0.0
	for _, b := range bars {
		if !math.IsNaN(b.Value) && b.Value > maxV {
			maxV = b.Value
		}
	}
	plotW := float64(chartWidth - labelWidth - valueWidth)
	height := titleHeight + rowHeight*len(bars) + 10
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="13">`+"\n",
		chartWidth, height, chartWidth, height)
	fmt.Fprintf(&s, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	fmt.Fprintf(&s, `<text x="10" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", html.EscapeString(title))
	for i, b := range bars {
		y := titleHeight + i*rowHeight
		fmt.Fprintf(&s, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", labelWidth-8, y+17, html.EscapeString(b.Label))
		if math.IsNaN(b.Value) {
			fmt.Fprintf(&s, `<text x="%d" y="%d" fill="#777777">%s</text>`+"\n", labelWidth, y+17, html.EscapeString(b.Text))
			continue
		}
		w := 0.0
		if maxV > 0 {
			w = math.Max(b.Value/maxV*plotW, 1)
		}
		colour := "#8c99a6"
		if b.Ours {
			colour = "#1f77b4"
		}
		fmt.Fprintf(&s, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", labelWidth, y+4, w, rowHeight-8, colour)
		fmt.Fprintf(&s, `<text x="%.1f" y="%d">%s</text>`+"\n", float64(labelWidth)+w+6, y+17, html.EscapeString(formatValue(b.Value)+" "+unit))
	}
	s.WriteString("</svg>\n")
	return s.String()
}

// formatValue prints v with three significant digits at most, without
// exponent: 12345 → 12345, 12.345 → 12.3, 0.01234 → 0.0123; a whole
// number (a count) without decimals.
func formatValue(v float64) string {
	av := math.Abs(v)
	switch {
	case av >= 100 || v == math.Trunc(v):
		return strconv.FormatFloat(v, 'f', 0, 64)
	case av >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case av >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}
