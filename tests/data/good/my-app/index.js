console.log("dark mode")
