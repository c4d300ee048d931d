package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// series is one line of a line chart: y at x = 0, step, 2·step ….
type series struct {
	Label string
	Step  float64
	Y     []float64
	// Ours draws the line in the module's colour (the first of ours;
	// others get the palette's next).
	Ours bool
}

// mark is a vertical line across the plot at X, labelled at its top.
type mark struct {
	X     float64
	Label string
}

// The other contenders' line colours, after ours.
var linePalette = []string{"#d62728", "#2ca02c", "#9467bd", "#8c564b", "#8c99a6"}

const (
	lineHeight  = 300
	lineLeft    = 50
	lineRight   = 20
	lineTop     = 60
	lineBottom  = 40
	legendWidth = 150
)

// lineChart draws each series as a step line (the value holds until the
// next sample) over a shared x axis, with marks such as the steps of an
// offered load, in the same plain SVG as barChart.
func lineChart(title, xUnit, yUnit string, lines []series, marks []mark) string {
	maxX, maxY := 0.0, 1.0
	for _, l := range lines {
		maxX = math.Max(maxX, l.Step*float64(len(l.Y)))
		for _, y := range l.Y {
			maxY = math.Max(maxY, y)
		}
	}
	for _, m := range marks {
		maxX = math.Max(maxX, m.X)
	}
	if maxX == 0 {
		maxX = 1
	}
	plotW := float64(chartWidth - lineLeft - lineRight - legendWidth)
	plotH := float64(lineHeight - lineTop - lineBottom)
	px := func(x float64) float64 { return lineLeft + x/maxX*plotW }
	py := func(y float64) float64 { return lineTop + plotH - y/maxY*plotH }

	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="13">`+"\n",
		chartWidth, lineHeight, chartWidth, lineHeight)
	fmt.Fprintf(&s, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	fmt.Fprintf(&s, `<text x="10" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", html.EscapeString(title))
	// Axes, and a tick at every whole y and every tenth of x.
	fmt.Fprintf(&s, `<path d="M%d %d V%.1f H%.1f" stroke="#333333" fill="none"/>`+"\n", lineLeft, lineTop, py(0), px(maxX))
	yStep := math.Max(1, math.Ceil(maxY/8))
	for y := 0.0; y <= maxY; y += yStep {
		fmt.Fprintf(&s, `<text x="%d" y="%.1f" text-anchor="end" fill="#555555">%s</text>`+"\n", lineLeft-6, py(y)+4, formatValue(y))
		fmt.Fprintf(&s, `<path d="M%d %.1f H%.1f" stroke="#eeeeee"/>`+"\n", lineLeft+1, py(y), px(maxX))
	}
	for i := 0; i <= 10; i++ {
		x := maxX * float64(i) / 10
		fmt.Fprintf(&s, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#555555">%s</text>`+"\n", px(x), py(0)+16, formatValue(math.Round(x)))
	}
	fmt.Fprintf(&s, `<text x="%.1f" y="%d" text-anchor="middle" fill="#555555">%s</text>`+"\n", px(maxX/2), lineHeight-6, html.EscapeString(xUnit))
	fmt.Fprintf(&s, `<text x="10" y="%d" fill="#555555">%s</text>`+"\n", lineTop-10, html.EscapeString(yUnit))
	for _, m := range marks {
		fmt.Fprintf(&s, `<path d="M%.1f %d V%.1f" stroke="#bbbbbb" stroke-dasharray="4 3"/>`+"\n", px(m.X), lineTop, py(0))
		fmt.Fprintf(&s, `<text x="%.1f" y="%d" fill="#777777">%s</text>`+"\n", px(m.X)+3, lineTop-10+14, html.EscapeString(m.Label))
	}
	other := 0
	ours := false
	for i, l := range lines {
		colour := linePalette[len(linePalette)-1]
		if l.Ours && !ours {
			colour, ours = "#1f77b4", true
		} else if other < len(linePalette) {
			colour = linePalette[other]
			other++
		}
		var d strings.Builder
		for k, y := range l.Y {
			x := l.Step * float64(k)
			if k == 0 {
				fmt.Fprintf(&d, "M%.1f %.1f", px(x), py(y))
			} else {
				fmt.Fprintf(&d, " H%.1f V%.1f", px(x), py(y))
			}
		}
		if len(l.Y) > 0 {
			fmt.Fprintf(&d, " H%.1f", px(l.Step*float64(len(l.Y))))
		}
		fmt.Fprintf(&s, `<path d="%s" stroke="%s" stroke-width="2" fill="none"/>`+"\n", d.String(), colour)
		ly := lineTop + 18*i
		lx := chartWidth - legendWidth
		fmt.Fprintf(&s, `<path d="M%d %d H%d" stroke="%s" stroke-width="3"/>`+"\n", lx, ly, lx+18, colour)
		fmt.Fprintf(&s, `<text x="%d" y="%d">%s</text>`+"\n", lx+24, ly+4, html.EscapeString(l.Label))
	}
	s.WriteString("</svg>\n")
	return s.String()
}
