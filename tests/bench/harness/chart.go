package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"strings"
)

var (
	colBackground = color.RGBA{255, 255, 255, 255}
	colAxis       = color.RGBA{40, 40, 40, 255}
	colGrid       = color.RGBA{225, 225, 225, 255}
	colText       = color.RGBA{20, 20, 20, 255}
	colTarget     = color.RGBA{210, 30, 30, 255}
	colPass       = color.RGBA{20, 130, 40, 255}
	colConfig     = map[string]color.RGBA{
		cfgExt4:        {160, 160, 160, 255},
		cfgPassthrough: {140, 190, 230, 255},
		cfgBaseline:    {31, 78, 140, 255},
		cfgKmsfs:       {235, 130, 30, 255},
	}
	chartName = map[string]string{
		cfgExt4:        "EXT4",
		cfgPassthrough: "PASSTHROUGH LOOPBACK",
		cfgBaseline:    "DAEMON-COPY LOOPBACK (BASELINE)",
		cfgKmsfs:       "KMSFS",
	}
)

// writeChart draws one group of bars per speed metric, one bar per
// configuration, each normalised to the baseline of the same repetition.
func writeChart(r *runner, path string) error {
	const (
		s       = 2 // text scale
		left    = 90
		right   = 30
		top     = 110
		plotH   = 400
		groupW  = 130
		barW    = 24
		labelsH = 110
	)
	var cfgs []string
	for _, c := range allConfigs {
		if r.has(c) {
			cfgs = append(cfgs, c)
		}
	}
	metrics := speedMetrics
	width := left + len(metrics)*groupW + right
	height := top + plotH + labelsH
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	fillRect(img, 0, 0, width, height, colBackground)

	title := "SPEED RELATIVE TO THE DAEMON-COPY BASELINE (= 1.0, HIGHER IS BETTER)"
	if r.o.quick {
		title += " - QUICK RUN"
	}
	drawText(img, left, 14, title, s, colText)
	// Legend.
	x := left
	for _, c := range cfgs {
		fillRect(img, x, 52, 16, 16, colConfig[c])
		drawText(img, x+22, 54, chartName[c], s, colText)
		x += 22 + textWidth(chartName[c], s) + 30
	}
	fillRect(img, x, 59, 22, 4, colTarget)
	drawText(img, x+28, 54, "TARGET", s, colText)

	// Vertical scale: room for kmsfs and the baseline; faster
	// configurations are cut.
	yMax := 2.0
	for _, m := range metrics {
		if v := r.res.ratio(cfgKmsfs, m); !nan(v) && v+0.25 > yMax {
			yMax = math.Min(4, math.Ceil((v+0.25)*2)/2)
		}
	}
	step := 0.25
	if yMax > 2 {
		step = 0.5
	}
	yOf := func(v float64) int { return top + plotH - int(math.Round(v/yMax*plotH)) }
	for v := 0.0; v <= yMax+1e-9; v += step {
		y := yOf(v)
		fillRect(img, left, y, width-left-right, 1, colGrid)
		lbl := fmt.Sprintf("%.2f", v)
		drawText(img, left-10-textWidth(lbl, s), y-7, lbl, s, colText)
	}
	// The baseline's level, dashed.
	for xx := left; xx < width-right; xx += 12 {
		fillRect(img, xx, yOf(1)-1, 7, 2, colAxis)
	}
	drawText(img, 8, top-30, "X BASELINE", s, colText)

	for gi, m := range metrics {
		gx := left + gi*groupW + (groupW-len(cfgs)*barW)/2
		for ci, c := range cfgs {
			v := r.res.ratio(c, m)
			if c == cfgBaseline && !nan(r.res.median(c, m.key)) {
				v = 1
			}
			if nan(v) {
				continue
			}
			bx := gx + ci*barW
			shown := math.Min(v, yMax)
			y0 := yOf(shown)
			fillRect(img, bx+1, y0, barW-2, top+plotH-y0, colConfig[c])
			if v > yMax {
				// Cut mark and the true value above the bar.
				for i := 0; i < barW-2; i++ {
					fillRect(img, bx+1+i, y0+10+i/4, 1, 3, colBackground)
				}
				lbl := fmt.Sprintf("%.0f", v)
				if v < 10 {
					lbl = fmt.Sprintf("%.1f", v)
				}
				drawTextCentered(img, bx+barW/2, y0-10, lbl, 1, colText)
			}
			if c == cfgKmsfs && m.target > 0 {
				fillRect(img, bx-3, yOf(m.target)-1, barW+6, 3, colTarget)
			}
		}
		// Group label and kmsfs's ratio.
		cx := left + gi*groupW + groupW/2
		for li, line := range strings.Split(m.chart, "|") {
			drawTextCentered(img, cx, top+plotH+12+li*20, line, s, colText)
		}
		if v := r.res.ratio(cfgKmsfs, m); !nan(v) {
			c := colTarget
			if verdict(v, m.target) == "PASS" {
				c = colPass
			}
			drawTextCentered(img, cx, top+plotH+62, fmt.Sprintf("%.2f", v), s, c)
		}
	}
	// Axes.
	fillRect(img, left, top, 2, plotH+1, colAxis)
	fillRect(img, left, top+plotH, width-left-right, 2, colAxis)
	drawText(img, 8, top+plotH+62, "KMSFS", s, colConfig[cfgKmsfs])

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
